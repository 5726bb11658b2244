"""State files carry a format number: a stale or foreign one gets a clear error naming it, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from azbai.errors import JobError, PipelineError
from azbai.local.jobs import RECORD_FORMAT, JobBook, JobRecord
from azbai.local.pipelines import RUN_FORMAT, PipelineRun
from azbai.local.workspace import Workspace
from tests.conftest import DATA


def azbai_cli(workspace: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "azbai", *args],
        capture_output=True,
        text=True,
        env={"AZBAI_WORKSPACE": str(workspace), "PATH": "/usr/bin:/bin"},
    )


def test_a_record_round_trips_with_its_format(tmp_path: Path) -> None:
    record = JobBook(Workspace(tmp_path)).create("exp", "job")
    data = json.loads((record.path / "record.json").read_text())
    assert data["format"] == RECORD_FORMAT
    assert JobRecord.load(record.path) == record


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": 99}, "format 99"),
        ({"surprise": True}, "unknown field.*surprise"),
        ({"format": None}, "format None"),
    ],
)
def test_a_stale_or_foreign_job_record_is_refused_by_name(tmp_path: Path, change: dict, message: str) -> None:
    record = JobBook(Workspace(tmp_path)).create("exp", "job")
    path = record.path / "record.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(JobError, match=message):
        JobRecord.load(record.path)
    done = azbai_cli(tmp_path, "job", "list")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"Error: {path}" in done.stderr and "remove the directory" in done.stderr


def test_a_run_file_without_steps_is_refused(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path)
    run_dir = workspace.pipelines_dir / "words" / "runs" / "run-1"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"format": RUN_FORMAT, "pipeline": "words"}))
    with pytest.raises(PipelineError, match="damaged pipeline run"):
        PipelineRun.load(run_dir)
    done = azbai_cli(tmp_path, "pipeline", "runs", "-f", str(DATA / "pipeline/pipeline.json"))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "run.json is a damaged pipeline run" in done.stderr
