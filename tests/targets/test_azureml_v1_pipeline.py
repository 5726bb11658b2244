"""Pipeline files as Azure ML SDK v1 pipelines: steps, data between them, parameters, ParallelRunStep, Schedule."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import azbai
from azbai.facade import render_files
from azbai.targets.azureml_v1 import build_objects, offline
from tests.conftest import DATA

PIPELINE = DATA / "pipeline"


def test_a_pipeline_of_jobs_and_a_parallel_step_builds_offline(tmp_path: Path) -> None:
    result = azbai.migrate(PIPELINE / "parallel.json", tmp_path / "out", storage_account="mystorage")
    assert (tmp_path / "out/snapshot/shout/entry.py").is_file()  # the parallel step's code travels with it
    assert (tmp_path / "out/snapshot/produce/azbai_job.json").is_file()
    objects = build_objects(
        result.plan, directory=tmp_path / "built", account_name="mystorage", base_dir=PIPELINE
    )
    summary = offline.summarize(objects)
    steps = {s["name"]: s for s in summary["pipeline"]}
    assert list(steps) == ["produce", "shout", "consume"]
    produce, shout, consume = steps["produce"], steps["shout"], steps["consume"]
    # data flows: produce writes 'words', the parallel step reads it and writes 'loud', consume reads 'loud'
    assert produce["outputs"] == ["words"] and "words" in shout["inputs"] and shout["outputs"] == ["loud"]
    assert "loud" in consume["inputs"] and consume["outputs"] == ["output_result"]
    # the data-path parameter is downloaded; the string parameter reaches the launcher and the entry script
    assert [p["mode"] for n, p in produce["inputs"].items() if n.startswith("inbox_blob")] == ["download"]
    assert produce["arguments"][-3:] == ["--param", "greeting", "<input:greeting>"]
    arguments = shout["arguments"]
    assert arguments[arguments.index("--mini_batch_size") + 1] == "2"
    assert arguments[arguments.index("--process_count_per_node") + 1] == "2"
    assert arguments[arguments.index("--error_threshold") + 1] == "0"
    assert arguments[arguments.index("--suffix") + 1] == "<input:greeting>"
    assert arguments[arguments.index("--scoring_module_name") + 1] == "entry.py"
    assert {c["name"]: c["vm_size"] for c in summary["computes"]} == {
        "gpu-cluster": "STANDARD_NC4AS_T4_V3", "cpu-cluster": "STANDARD_D2_V3",
    }  # fmt: skip
    assert summary["schedule"] == {
        "name": "words-parallel-trigger",
        "pipeline_id": offline.OFFLINE_PIPELINE_ID,
        "datastore": "inbox_blob",
        "path_on_datastore": "incoming",
        "polling_interval": 1,
        "data_path_parameter_name": "text",
    }
    assert summary["step_segment"].endswith("/jobs/words-parallel/{run-id}")


def test_pipeline_py_dry_run_for_a_pipeline(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "azbai", "migrate", str(PIPELINE / "pipeline.json"), "-o", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    dry = subprocess.run(
        [sys.executable, str(tmp_path / "pipeline.py"), "--dry-run", "--json"], capture_output=True, text=True
    )
    assert dry.returncode == 0, dry.stderr[-2000:]
    summary = json.loads(dry.stdout)
    assert [s["name"] for s in summary["pipeline"]] == ["produce", "consume"]
    assert summary["schedule"]["data_path_parameter_name"] == "text"
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert [d["name"] for d in plan["pipeline_data"]] == ["words"]
    assert "Schedule.create(" in (tmp_path / "pipeline.py").read_text()


def test_a_step_in_a_private_registry_gets_it_and_its_password_only_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "pipeline"
    shutil.copytree(PIPELINE, folder, ignore=shutil.ignore_patterns("__pycache__"))
    job = json.loads((folder / "produce.job.json").read_text())
    registry = {"image": "myreg.azurecr.io/img:1", "serverUrl": "myreg.azurecr.io"}
    registry["credentials"] = {"username": "u", "password": "not-in-generated-code"}
    job["properties"]["containerSettings"] = {"imageSourceRegistry": registry}
    (folder / "produce.job.json").write_text(json.dumps(job))
    plan = azbai.load(folder / "pipeline.json", storage_account="mystorage")
    code = render_files(plan, folder)["pipeline.py"]
    assert "not-in-generated-code" not in str(code)
    monkeypatch.setenv("AZBAI_REGISTRY_PASSWORD", "given-when-built")
    objects = build_objects(plan, directory=tmp_path / "built", account_name="mystorage", base_dir=folder)
    produce, consume = (objects["module"].environment(name) for name in ("produce", "consume"))
    registry_of = produce.docker.base_image_registry
    assert (produce.docker.base_image, registry_of.address, registry_of.username) == (
        "myreg.azurecr.io/img:1", "myreg.azurecr.io", "u",
    )  # fmt: skip
    assert registry_of.password == "given-when-built" and produce.python.user_managed_dependencies
    assert consume.docker.base_image_registry.address is None
