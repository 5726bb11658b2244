"""Nothing a job wrote is lost when its runner dies: the runner is SIGKILLed while the job's process has written
its outputs and still runs, and the next look at the run (``azbai ml job show``) stops that process, stages out
every byte it wrote (checked by MD5), and reports the run Failed, naming the dead runner. Real Azurite, real
runner and job processes; ``upload`` and ``rw_mount`` outputs, the latter in each ``blob_mount`` mode."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from azbai.local import blobfuse
from azbai.local.azurite import DEV_ACCOUNT, Emulator
from azbai.local.stores import BlobStore, open_store
from azbai.local.workspace import Workspace
from azbai.ml.runs import FINISHED, RunBook, RunRecord, pid_alive
from azbai.ml.service import create_job, list_jobs, show_job
from tests.conftest import ROOT
from tests.ml.conftest import register_blob_datastore

pytestmark = pytest.mark.azurite

#: what the job does: writes two files to each output, changes and removes a blob of its rw_mount, notes the
#: MD5 of each byte it wrote and its pid, then waits for ``go`` (and exits 0) or for the test to kill it
SCRIPT = """\
import hashlib, json, os, sys, time
up, rw, ledger = sys.argv[1], sys.argv[2], sys.argv[3]
written = {}
for out, name in ((up, "up"), (rw, "rw")):
    for rel in ("a.bin", "deep/b.bin"):
        data = os.urandom(300_000)
        os.makedirs(os.path.dirname(os.path.join(out, rel)), exist_ok=True)
        with open(os.path.join(out, rel), "wb") as handle:
            handle.write(data)
        written[f"{name}/{rel}"] = hashlib.md5(data).hexdigest()
with open(os.path.join(rw, "changed.txt"), "a") as handle:
    handle.write(" and more")
os.remove(os.path.join(rw, "removed.txt"))
with open(ledger + ".tmp", "w") as handle:
    json.dump({"pid": os.getpid(), "written": written}, handle)
os.rename(ledger + ".tmp", ledger)
deadline = time.monotonic() + 120
while not os.path.exists(ledger + ".go") and time.monotonic() < deadline:
    time.sleep(0.05)
"""

NODE = """\
    type: command
    code: ./src
    command: python job.py ${{{{outputs.up}}}} ${{{{outputs.rw}}}} {ledger}
    environment: {{image: python:3.11}}
    outputs:
      up: {{type: uri_folder, path: azureml://datastores/{store}/paths/{tag}/up, mode: upload}}
      rw: {{type: uri_folder, path: azureml://datastores/{store}/paths/{tag}/rw, mode: rw_mount}}
"""


def prepare(workspace: Workspace, tmp_path: Path, name: str, *, pipeline: bool = False) -> Path:
    """A container ``name`` (its datastore registered) with the blobs the job's rw_mount starts from, and the job
    file (a command job, or a pipeline of one such node)."""
    store = open_store(workspace, DEV_ACCOUNT, container=name)
    assert isinstance(store, BlobStore)
    store.write_bytes("t/rw/changed.txt", b"before")
    store.write_bytes("t/rw/removed.txt", b"gone soon")
    store.write_bytes("t/rw/never-opened.bin", b"untouched")
    (tmp_path / "src").mkdir()
    (tmp_path / "src/job.py").write_text(SCRIPT)
    register_blob_datastore(workspace, tmp_path, name)
    node = NODE.format(ledger=tmp_path / "ledger.json", store=name, tag="t")
    file = tmp_path / "job.yml"
    if pipeline:
        file.write_text("type: pipeline\njobs:\n  first:\n" + node)
    else:
        file.write_text("\n".join(line[4:] for line in node.splitlines()) + "\n")
    return file


def started(tmp_path: Path, record: RunRecord) -> tuple[int, dict[str, str]]:
    """What the job noted once it wrote its outputs: its pid, and the MD5 of each file it wrote."""
    ledger = tmp_path / "ledger.json"
    deadline = time.monotonic() + 90
    while not ledger.exists():
        runner = (record.path / "runner.log").read_text() if (record.path / "runner.log").exists() else ""
        assert time.monotonic() < deadline, f"the job did not write its outputs; runner.log:\n{runner}"
        time.sleep(0.05)
    noted = json.loads(ledger.read_text())
    return int(noted["pid"]), dict(noted["written"])


def kill_runner(workspace: Workspace, name: str) -> int:
    """SIGKILL the run's runner and wait for it to be gone; its pid."""
    runner = RunBook(workspace).get(name).pid
    assert runner is not None and pid_alive(runner)
    os.kill(runner, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while pid_alive(runner):
        assert time.monotonic() < deadline, "the runner did not die"
        time.sleep(0.05)
    return runner


def check_in_storage(workspace: Workspace, name: str, written: dict[str, str]) -> None:
    """Every file the job wrote is in the container ``name``, byte for byte; the rw_mount's change and removal
    too, and the blob it never opened is as it was. (The container is opened afresh: the emulator may have
    been restarted, on another port.)"""
    store = open_store(workspace, DEV_ACCOUNT, container=name)
    for rel, md5 in written.items():
        assert hashlib.md5(store.read_bytes(f"t/{rel}")).hexdigest() == md5, rel
    assert store.read_bytes("t/rw/changed.txt") == b"before and more"
    assert store.read_bytes("t/rw/never-opened.bin") == b"untouched"
    assert "t/rw/removed.txt" not in {e.path for e in store.list("t/")}


def test_a_killed_runner_s_outputs_are_staged_out_by_the_next_look(
    ml_workspace: Workspace, tmp_path: Path, blob_mount: str
) -> None:
    name = f"killed-{blob_mount}"
    file = prepare(ml_workspace, tmp_path, name)
    record = create_job(ml_workspace, file, name=name)
    job_pid, written = started(tmp_path, record)
    runner = kill_runner(ml_workspace, record.name)
    assert pid_alive(job_pid)  # the job's process outlives its runner, until the next look stops it
    seen = show_job(ml_workspace, record.name)
    assert seen.status == "Failed" and seen.stage_out == "Done", seen.message
    assert f"runner (pid {runner}) died" in str(seen.message) and "1 process(es)" in str(seen.message)
    assert not pid_alive(job_pid)
    check_in_storage(ml_workspace, name, written)
    assert blobfuse.mounts_under(record.path) == []
    plan = json.loads((record.path / "stageout.json").read_text())
    assert plan["format"] == 1 and all(item["done"] for item in plan["items"])
    assert "key" not in (record.path / "stageout.json").read_text().lower()  # no account key, no SAS
    assert (
        show_job(ml_workspace, record.name).to_dict() == seen.to_dict()
    )  # once: a later look changes nothing


def test_a_stage_out_that_fails_while_storage_is_down_is_retried_by_a_later_look(
    ml_workspace: Workspace, tmp_path: Path, blob_mount: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"down-{blob_mount}"
    file = prepare(ml_workspace, tmp_path, name)
    record = create_job(ml_workspace, file, name=name)
    job_pid, written = started(tmp_path, record)
    Emulator(ml_workspace).stop()
    kill_runner(ml_workspace, record.name)
    with monkeypatch.context() as patch:  # storage cannot come back for this look
        patch.setenv("AZBAI_AZURITE_BIN", str(tmp_path / "no-azurite-here"))
        seen = show_job(ml_workspace, record.name)
        assert (seen.status, seen.stage_out) == ("Failed", "Failed")
        assert seen.stage_out_error and "stage-out failed" in str(seen.message)
        # what the job wrote is where its paths say, meanwhile
        assert (Path(seen.outputs["rw"]["path"]) / "a.bin").is_file()
        assert show_job(ml_workspace, record.name).stage_out == "Failed"  # retried, failed again
        assert not pid_alive(job_pid)  # stopped by the first look, storage or not
    seen = show_job(ml_workspace, record.name)  # this look can start the emulator again
    assert (seen.status, seen.stage_out, seen.stage_out_error) == ("Failed", "Done", None)
    assert "died" in str(seen.message) and "stage-out failed" not in str(seen.message)
    check_in_storage(ml_workspace, name, written)


def test_a_job_that_succeeded_is_completed_once_its_failed_stage_out_is_retried(
    ml_workspace: Workspace, tmp_path: Path
) -> None:
    name = "late"
    file = prepare(ml_workspace, tmp_path, name)
    unstartable = {"AZBAI_AZURITE_BIN": str(tmp_path / "no-azurite-here")}
    record = create_job(ml_workspace, file, name="late", env=unstartable)
    _, written = started(tmp_path, record)
    Emulator(ml_workspace).stop()
    (tmp_path / "ledger.json.go").touch()  # the job exits 0; its runner cannot reach storage
    deadline = time.monotonic() + 60
    while (found := RunBook(ml_workspace).get("late")).status not in FINISHED or found.runner_alive:
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(0.1)
    assert (found.status, found.exit_code, found.stage_out) == ("Failed", 0, "Failed")
    assert str(found.message).startswith("stage-out failed: output 'up'")
    seen = show_job(ml_workspace, "late")
    assert (seen.status, seen.stage_out, seen.message) == ("Completed", "Done", None)
    check_in_storage(ml_workspace, name, written)


def test_two_concurrent_lookers_stage_out_once(ml_workspace: Workspace, tmp_path: Path) -> None:
    name = "lookers"
    file = prepare(ml_workspace, tmp_path, name)
    record = create_job(ml_workspace, file, name="lookers")
    job_pid, written = started(tmp_path, record)
    kill_runner(ml_workspace, record.name)
    look = (
        "import logging, sys\nfrom pathlib import Path\n"
        "logging.basicConfig(level=logging.INFO, format='%(name)s: %(message)s')\n"
        "from azbai.local.workspace import Workspace\nfrom azbai.ml.service import show_job\n"
        "print(show_job(Workspace(Path(sys.argv[1])), sys.argv[2]).status)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    lookers = [
        subprocess.Popen(
            [sys.executable, "-c", look, str(ml_workspace.root), record.name],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [looker.communicate(timeout=120) for looker in lookers]
    assert [out.strip() for out, _ in results] == ["Failed", "Failed"], results
    logs = [err for _, err in results]
    assert sum("staged out 2 output(s)" in err for err in logs) == 1, logs
    assert sum("died while the job ran" in err for err in logs) == 1, logs
    assert not pid_alive(job_pid)
    check_in_storage(ml_workspace, name, written)


def test_a_pipeline_s_node_is_staged_out_when_the_pipeline_s_runner_dies(
    ml_workspace: Workspace, tmp_path: Path
) -> None:
    name = "pipeline"
    file = prepare(ml_workspace, tmp_path, name, pipeline=True)
    record = create_job(ml_workspace, file, name="pipeline-killed")
    job_pid, written = started(tmp_path, record)
    runner = kill_runner(ml_workspace, record.name)
    (seen,) = [run for run in list_jobs(ml_workspace) if run.name == record.name]  # job list looks too
    assert seen.status == "Failed" and f"pipeline's runner (pid {runner}) died" in str(seen.message)
    node = RunBook(ml_workspace).get(seen.children["first"])
    assert (node.status, node.stage_out) == ("Failed", "Done") and "died" in str(node.message)
    assert not pid_alive(job_pid)
    check_in_storage(ml_workspace, name, written)
