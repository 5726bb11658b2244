"""Every real Batch AI config reads: recipes, 69 historical versions, and the configs from the docs."""

from __future__ import annotations

from pathlib import Path

import pytest

from azbai.errors import SpecError
from azbai.source.reader import load_cluster, load_job
from tests.conftest import CORPUS, corpus_files, corpus_id

INVALID_JSON = {
    "history/2018-05-15_3d7b5583/recipes/TensorFlow/TensorFlow-GPU/job.json": (7, 9),
    "history/2018-08-23_eb018614/recipes/TensorFlow/TensorFlow-GPU-Distributed/job.json": (25, 9),
}
#: doc snippets that show only containerSettings ("the rest of job's parameters"): merged into a job, they migrate
FRAGMENTS = {
    "doc-examples/documentation/using-azure-cli-20/block58.job.json",
    "doc-examples/documentation/using-azure-cli-20/block59.job.json",
    "doc-examples/documentation/using-azure-cli-20.at-c9dd49f-2018-04-27/block46.job.json",
    "doc-examples/documentation/using-azure-cli-20.at-c9dd49f-2018-04-27/block47.job.json",
    "doc-examples/documentation/using-azure-container-registry/block00.job.json",
    "doc-examples/documentation/using-azure-container-registry/block01.job.json",
}
BASE_JOB = CORPUS / "recipes/CNTK/CNTK-GPU-Python/job.json"
JOBS = corpus_files("job")


def test_the_corpus_is_all_there() -> None:
    assert len(JOBS) == 17 + 69 + 22  # recipes at HEAD, historical versions, job configs from the docs
    assert len(list((CORPUS / "history").rglob("*.json"))) == 69


@pytest.mark.parametrize("path", JOBS, ids=corpus_id)
def test_every_job_config_reads(path: Path) -> None:
    name = corpus_id(path)
    if name in INVALID_JSON:
        with pytest.raises(SpecError) as caught:
            load_job(path)
        (diagnostic,) = caught.value.diagnostics
        assert diagnostic.code == "invalid-json"
        assert (diagnostic.line, diagnostic.column) == INVALID_JSON[name]
        assert "trailing comma" in diagnostic.message
    elif name in FRAGMENTS:
        with pytest.raises(SpecError) as caught:
            load_job(path)
        codes = [d.code for d in caught.value.diagnostics if d.is_error]
        assert "no-toolkit" in codes
        merged = load_job(BASE_JOB, merge=[path])
        image = merged.properties.container_settings.image_source_registry.image
        assert image != "microsoft/cntk:2.5.1-gpu-python2.7-cuda9.0-cudnn7.0"  # the fragment's image won
    else:
        job = load_job(path)
        assert job.properties.toolkit is not None
        assert not [d for d in job.diagnostics if d.is_error]


@pytest.mark.parametrize("path", corpus_files("cluster"), ids=corpus_id)
def test_every_cluster_config_reads(path: Path) -> None:
    cluster = load_cluster(path)
    assert cluster.properties is not None


@pytest.mark.parametrize("path", corpus_files("other"), ids=corpus_id)
def test_illustration_files_are_not_jobs(path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        load_job(path)
    assert {"no-toolkit", "wrong-file"} & {d.code for d in caught.value.diagnostics}


def test_known_quirks_of_the_history_are_warnings() -> None:
    """process_count (snake case) and chainer masterCommandLineArgs were ignored by Batch AI: warnings with a hint."""
    seen: dict[str, list[str]] = {}
    for path in JOBS:
        if corpus_id(path) in INVALID_JSON or corpus_id(path) in FRAGMENTS:
            continue
        for d in load_job(path).diagnostics:
            seen.setdefault(d.code, []).append(d.message)
    assert any("did you mean 'processCount'" in m for m in seen["unknown-key"])
    assert any("AZ_BATCHAI_INPUT_DATASET" in m for m in seen["undeclared-directory"])
    assert any("AZ_BATCHAI_PYTORCH_BACKEND" in m for m in seen["unreliable-variable"])
