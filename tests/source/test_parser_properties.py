"""Property tests: whatever JSON a user hands over, the reader answers with azbai's own error or a model."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azbai.convert.job import build_plan
from azbai.errors import SpecError
from azbai.plan.serialize import plan_from_dict, plan_to_dict
from azbai.source.reader import load_cluster, load_job
from tests.conftest import CORPUS, TIMING_HEALTH_CHECKS

KEYS = [
    "properties", "nodeCount", "cntkSettings", "pyTorchSettings", "tensorFlowSettings", "customToolkitSettings",
    "customMpiSettings", "horovodSettings", "commandLine", "pythonScriptFilePath", "commandLineArgs", "processCount",
    "mountVolumes", "azureFileShares", "azureBlobFileSystems", "azureFileUrl", "relativeMountPath", "accountName",
    "containerName", "credentials", "accountKey", "inputDirectories", "outputDirectories", "id", "path", "pathPrefix",
    "pathSuffix", "stdOutErrPathPrefix", "environmentVariables", "secrets", "name", "value", "constraints",
    "maxWallClockTime", "$schema", "jobPreparation", "containerSettings", "imageSourceRegistry", "image",
    "workerCount", "parameterServerCount", "languageType", "configFilePath", "nodeSetup", "scaleSettings",
]  # fmt: skip
STRINGS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs", "$AZ_BATCHAI_MOUNT_ROOT/../x", "../up", "/abs", "<AZURE_BATCHAI_STORAGE_ACCOUNT>",
            "https://<AZURE_BATCHAI_STORAGE_ACCOUNT>.file.core.windows.net/logs", "https://a.file.core.windows.net/",
            "P7D", "7.00:00:00", "Python", "BrainScript", "gloo", "$AZ_BATCHAI_OUTPUT_MODEL", "${X", "logs",
        ]
    ),
)  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | STRINGS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), children, max_size=6)
    ),
    max_leaves=40,
)
_REAL_FILE = CORPUS / "recipes/TensorFlow/TensorFlow-GPU-Distributed/job.json"
REAL = json.loads(_REAL_FILE.read_text()) if _REAL_FILE.is_file() else {"properties": {}}


def _read(tmp: Path, value: Any) -> None:
    path = tmp / "job.json"
    path.write_text(json.dumps(value))
    try:
        job = load_job(path)
    except SpecError as exc:
        assert any(d.is_error for d in exc.diagnostics)
        return
    plan = build_plan(job)  # a job that reads must also plan
    assert plan_from_dict(plan_to_dict(plan)) == plan


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, *TIMING_HEALTH_CHECKS],
)
@given(value=JSON)
def test_arbitrary_json_gives_a_model_or_a_spec_error(tmp_path: Path, value: Any) -> None:
    _read(tmp_path, value)
    _read(tmp_path, {"properties": value})


def _mutations() -> st.SearchStrategy[Any]:
    def mutate(data: Any, path: list[str | int], new: Any) -> Any:
        copy = json.loads(json.dumps(data))
        node = copy
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = new
        return copy

    paths: list[list[str | int]] = []

    def walk(node: Any, prefix: list[str | int]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                paths.append([*prefix, key])
                walk(value, [*prefix, key])
        elif isinstance(node, list):
            for index, value in enumerate(node):
                paths.append([*prefix, index])
                walk(value, [*prefix, index])

    walk(REAL, [])
    return st.builds(mutate, st.just(REAL), st.sampled_from(paths), JSON)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, *TIMING_HEALTH_CHECKS],
)
@given(value=_mutations())
def test_a_real_config_with_one_value_replaced_never_crashes(tmp_path: Path, value: Any) -> None:
    _read(tmp_path, value)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, *TIMING_HEALTH_CHECKS],
)
@given(text=st.text(max_size=200))
def test_arbitrary_text_never_crashes(tmp_path: Path, text: str) -> None:
    path = tmp_path / "job.json"
    path.write_text(text)
    for reader in (load_job, load_cluster):
        with contextlib.suppress(SpecError):
            reader(path)
