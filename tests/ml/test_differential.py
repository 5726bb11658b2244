"""The local engines agree: every Batch AI recipe of the corpus, run by ``azbai job create`` from its job.json, by
``azbai ml job create`` from its migrated ``v2/job.yml`` and by ``python pipeline.py --local`` (the SDK v1 form),
writes the same files at the same datastore paths (outputs, and the stdout/stderr files in Batch AI's layout), with
the same lines from the same ranks.

Both run the recipe with the small stand-in scripts of ``tests/local/test_jobs.py`` (``report.py`` at every script
path, stubs for apt/pip/cntk), each engine in a workspace and emulator of its own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import azbai
from azbai.local.azurite import DEV_ACCOUNT, Emulator
from azbai.local.jobs import JobRecord
from azbai.local.stores import open_store
from azbai.local.workspace import Workspace
from azbai.ml.runs import RunRecord
from tests.conftest import CORPUS, DATA, ROOT
from tests.local.conftest import run_job
from tests.ml.conftest import register, run_v2

pytestmark = [pytest.mark.azurite, pytest.mark.slow]
SCRIPT = DATA / "jobs" / "report.py"
STUB = DATA / "jobs" / "stub.sh"
RECIPES = sorted((CORPUS / "recipes").rglob("*.json"))


@pytest.fixture(scope="module")
def workspaces(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Workspace]]:
    """One workspace (and emulator) per engine."""
    found = {
        engine: Workspace(tmp_path_factory.mktemp(f"diff-{engine}")) for engine in ("batchai", "v2", "v1")
    }
    emulators = [Emulator(w) for w in found.values()]
    try:
        for emulator in emulators:
            emulator.ensure()
        yield found
    finally:
        for emulator in emulators:
            emulator.stop()


def prepare(tmp_path: Path, recipe: Path, workspaces: dict[str, Workspace]) -> tuple[Path, dict[str, str]]:
    """The recipe with its inputs' paths put in, its scripts uploaded to both workspaces; returns (job.json, env)."""
    from azbai.convert.job import build_plan
    from azbai.source.reader import load_job

    inputs = {d.id: d.path for d in build_plan(load_job(recipe)).steps[0].job.input_directories}
    text = re.sub(
        r"\$AZ_BATCHAI_INPUT_(\w+)", lambda m: inputs.get(m.group(1), m.group(0)), recipe.read_text()
    )
    on_node = set(re.findall(r"(\$AZ_BATCHAI_JOB_TEMP/[\w./-]+\.py)\b", text))
    prep = "#!/bin/sh\n" + "".join(
        f'mkdir -p "$(dirname {p})" && cp $AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/report.py {p}\n'
        for p in sorted(on_node)
    )
    (tmp_path / "prep.sh").write_text(prep + STUB.read_text())
    for workspace in workspaces.values():
        scripts = open_store(workspace, DEV_ACCOUNT, share="scripts")
        scripts.upload_file(SCRIPT, "report.py")
        for match in set(re.findall(r"\$AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/([\w./-]+\.(?:py|sh))\b", text)):
            scripts.upload_file(tmp_path / "prep.sh" if match.endswith(".sh") else SCRIPT, match)
    shims = tmp_path / "bin"
    shims.mkdir()
    for tool in ("apt", "pip", "cntk"):
        shutil.copy(STUB, shims / tool)
    job = tmp_path / recipe.name
    job.write_text(text)
    return job, {"PATH": f"{shims}:{os.environ['PATH']}"}


def written(workspace: Workspace, run: str) -> dict[str, bytes]:
    """Every file the run left in the workspace's shares and containers whose path names the run, by store path."""
    files: dict[str, bytes] = {}
    shares = workspace.root / "shares"
    for path in shares.rglob("*"):
        rel = str(path.relative_to(shares))
        if path.is_file() and run in rel:
            files[f"share:{rel}"] = path.read_bytes()
    service = Emulator(workspace).blob_service(DEV_ACCOUNT)
    for container in service.list_containers():
        client = service.get_container_client(container.name)
        for blob in client.list_blobs():
            if run in blob.name:
                files[f"blob:{container.name}/{blob.name}"] = client.download_blob(blob.name).readall()
    return {
        re.sub(r"\d{8}t\d{6}z", "<time>", key.replace(run, "<run>")): value for key, value in files.items()
    }


def lines(data: bytes) -> list[Any]:
    """A stdout/stderr file's content: each report.py report as (argv length, its AZ_BATCHAI_* names), the other text
    with its absolute paths left out. Ranks append to one file (MPI's stdout.txt, stderr.txt) concurrently and Python
    writes a line and its newline apart, so lines of two ranks can join: the other text counts as a multiset of
    characters, in whatever order the ranks wrote them."""
    text, position, reports, other = data.decode(), 0, [], []
    decoder = json.JSONDecoder()
    while position < len(text):
        if text[position].isspace():
            position += 1
        elif text.startswith('{"argv"', position):
            report, position = decoder.raw_decode(text, position)
            reports.append(
                (len(report["argv"]), sorted(k for k in report["env"] if k.startswith("AZ_BATCHAI_")))
            )
        else:
            end = text.find("\n", position)
            end = len(text) if end < 0 else end
            # a node's local paths differ between the engines (as between two compute nodes): not compared
            other.append(
                re.sub(r"/[^\s'\"]*", "<path>", re.sub(r"\d{8}t\d{6}z", "<time>", text[position:end]))
            )
            position = end
    return [*sorted(reports, key=repr), "".join(sorted("".join(other)))]


def load_options(recipe: Path) -> dict[str, Any]:
    """A cluster mount the job names but does not describe becomes a share (as ``--mount`` says), for both."""
    from azbai.plan.model import MountRoot, VolumeKind

    job = azbai.load(recipe).steps[0].job
    names = [
        v.relative_mount_path
        for v in job.volumes
        if v.root is MountRoot.CLUSTER and v.kind is VolumeKind.UNDESCRIBED
    ]
    return {"mounts": [f"{n}=afs://{DEV_ACCOUNT}/{n}" for n in names]} if names else {}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(CORPUS / "recipes")))
def test_the_v2_and_v1_forms_leave_what_the_batch_ai_job_leaves(
    workspaces: dict[str, Workspace], tmp_path: Path, recipe: Path
) -> None:
    job, env = prepare(tmp_path, recipe, workspaces)
    options = load_options(job)
    plan = azbai.load(job, **options)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        record: JobRecord = run_job(workspaces["batchai"], job, options, name=plan.name, wait=True)
    finally:
        for key, value in old.items():
            os.environ[key] = value or ""
    azbai.migrate(job, tmp_path / "migrated", target="all", **options)
    register(workspaces["v2"], tmp_path / "migrated/v2")
    run: RunRecord = run_v2(workspaces["v2"], tmp_path / "migrated/v2/job.yml", env={**os.environ, **env})
    v1 = run_v1(workspaces["v1"], tmp_path / "migrated/pipeline.py", env)
    batchai = written(workspaces["batchai"], record.segment.rsplit("/", 1)[1])
    streams = [k for k in batchai if re.search(r"/std(out|err)[^/]*\.txt$", k)]
    assert streams, "the job wrote no stdout/stderr files"
    expected = sorted(k for k in batchai if "execution-" not in k)
    for engine, files in (("v2", written(workspaces["v2"], run.name)), ("v1", written(workspaces["v1"], v1))):
        assert sorted(k for k in files if "execution-" not in k) == expected, engine
        for key in streams:
            assert lines(files[key]) == lines(batchai[key]), (engine, key)


def run_v1(workspace: Workspace, pipeline_py: Path, env: dict[str, str]) -> str:
    """``python pipeline.py --local``; the name of the run of its (only) step."""
    from azbai.ml.runs import RunBook

    before = {r.name for r in RunBook(workspace).list()}
    result = subprocess.run(
        [sys.executable, str(pipeline_py), "--local"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, **env, "AZBAI_WORKSPACE": str(workspace.root), "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    (pipeline,) = [r for r in RunBook(workspace).list() if r.name not in before]
    (step,) = pipeline.children.values()
    return step


@pytest.mark.xfail(
    strict=True,
    reason="finding: a cluster mount the job names but no cluster.json describes gets no --data in v2/job.yml, so "
    "the launcher writes the job's stdout/stderr to the node's local volumes/ stand-in (lost with the node); "
    "azbai job create keeps them in the workspace's cluster-mounts/ directory",
)
def test_an_undescribed_cluster_mount_keeps_the_logs(
    workspaces: dict[str, Workspace], tmp_path: Path
) -> None:
    recipe = CORPUS / "recipes/CNTK/CNTK-GPU-BrainScript/job.json"
    job, env = prepare(tmp_path, recipe, workspaces)
    azbai.migrate(job, tmp_path / "migrated", target="v2")
    register(workspaces["v2"], tmp_path / "migrated/v2")
    run = run_v2(workspaces["v2"], tmp_path / "migrated/v2/job.yml", env={**os.environ, **env})
    kept = written(workspaces["v2"], run.name)
    assert any(re.search(r"/stdouterr/stdout\.txt$", k) for k in kept)
