"""Fixtures of the fault-injection suite: a workspace with its own Azurite, the writer job, and the check that
every byte a job wrote before a fault is in storage afterwards (by MD5).

With ``$AZBAI_FAULTS_REPORT`` set, each fault test appends ``{"fault", "survived", "files_lost"}`` to that file
(``make faults`` prints the totals).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import azbai
from azbai.convert import DEFAULT_EXPERIMENT
from azbai.errors import AzbaiError, StorageError
from azbai.local.azurite import DEV_ACCOUNT, Emulator
from azbai.local.jobs import JobBook, JobRecord
from azbai.local.runner import stop_leftovers
from azbai.local.service import create_job
from azbai.local.stores import open_store
from azbai.local.workspace import Workspace

WRITER = Path(__file__).with_name("writer.py")
REPORT_ENV = "AZBAI_FAULTS_REPORT"


@dataclass
class Faulty:
    """A workspace for one fault: its emulator, a ledger directory, and the writer job."""

    workspace: Workspace
    emulator: Emulator
    root: Path
    jobs: list[JobRecord]

    def job_file(self, count: int = 20, pause_at: int = -1, crash_at: int = -1, **extra: Any) -> Path:
        share = "https://<AZURE_BATCHAI_STORAGE_ACCOUNT>.file.core.windows.net/"
        properties: dict[str, Any] = {
            "nodeCount": 1,
            "customToolkitSettings": {
                "commandLine": f"python $AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/writer.py {count} {pause_at} {crash_at}"
            },
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs",
            "mountVolumes": {
                "azureFileShares": [
                    {"azureFileUrl": share + "logs", "relativeMountPath": "logs"},
                    {"azureFileUrl": share + "scripts", "relativeMountPath": "scripts"},
                    {"azureFileUrl": share + "results", "relativeMountPath": "out"},
                ],
                "azureBlobFileSystems": [
                    {
                        "accountName": "<AZURE_BATCHAI_STORAGE_ACCOUNT>",
                        "containerName": "results",
                        "relativeMountPath": "bout",
                    }
                ],
            },
            "outputDirectories": [
                {"id": "SHARE", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/out"},
                {"id": "BLOB", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/bout"},
                {"id": "TMP", "pathPrefix": "$AZ_BATCHAI_JOB_TEMP"},
            ],
        }
        properties.update(extra)
        path = self.root / f"job-{len(self.jobs)}.json"
        path.write_text(json.dumps({"properties": properties}))
        return path

    def start(
        self, name: str, path: Path, *, wait: bool = False, env: dict[str, str] | None = None
    ) -> tuple[JobRecord, Path]:
        """Create the job (in the background unless ``wait``); returns its record and its ledger directory."""
        ledger = self.root / f"ledger-{name}"
        ledger.mkdir()
        plan = azbai.load(path, name=name)
        try:
            record = create_job(self.workspace, plan, wait=wait, env={"LEDGER": str(ledger), **(env or {})})
        except AzbaiError:
            record = JobBook(self.workspace).get(name)
        self.jobs.append(record)
        return record, ledger

    def get(self, name: str) -> JobRecord:
        """The record as ``azbai job show`` sees it (a dead runner's job recovered, a failed stage-out retried)."""
        return JobBook(self.workspace).get(name)

    def get_only(self, name: str) -> JobRecord:
        """The record as it is on disk, without recovering or retrying anything."""
        return JobRecord.load(self.workspace.jobs_dir / DEFAULT_EXPERIMENT / name)

    def wait(self, name: str, timeout: float = 60) -> JobRecord:
        deadline = time.monotonic() + timeout
        while True:
            record = self.get(name)
            if record.finished and record.stage_out not in ("pending",):
                return record
            assert time.monotonic() < deadline, f"job {name} still {record.state}"
            time.sleep(0.2)

    def lost(self, record: JobRecord, ledger: Path) -> list[str]:
        """The ledger's files that are not in storage with the MD5 the job wrote (empty: nothing lost)."""
        lost = []
        entries = [line.split() for line in (ledger / "ledger.txt").read_text().splitlines() if line.strip()]
        assert entries, "the job wrote nothing before the fault"
        for key, name, md5 in entries:
            location = record.outputs[key]
            kind = (
                {"container": location.store} if location.store_kind == "blob" else {"share": location.store}
            )
            store = open_store(self.workspace, location.account or DEV_ACCOUNT, **kind)
            path = f"{location.prefix}/{name}" if location.prefix else name
            try:
                data = store.read_bytes(path)
            except StorageError:
                lost.append(f"{key}/{name} (missing)")
                continue
            if hashlib.md5(data).hexdigest() != md5:
                lost.append(f"{key}/{name} (different)")
        return lost


def wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[Faulty]:
    workspace = Workspace(tmp_path / "ws")
    emulator = Emulator(workspace)
    emulator.ensure()
    open_store(workspace, DEV_ACCOUNT, share="scripts").upload_file(WRITER, "writer.py")
    env = Faulty(workspace, emulator, tmp_path, [])
    try:
        yield env
    finally:
        for record in env.jobs:
            stop_leftovers(record, grace=2)
        for record in env.jobs:  # a runner still staging out would start the emulator again after we stop it
            deadline = time.monotonic() + 60
            while _background_runner_alive(record) and time.monotonic() < deadline:
                time.sleep(0.1)
        emulator.stop()


def _background_runner_alive(record: JobRecord) -> bool:
    """Whether a background runner (not this process, which ran the ``wait=True`` jobs) still works on it."""
    try:
        current = JobRecord.load(record.path)
    except AzbaiError:
        return False  # deleted by the test
    return current.runner_pid != os.getpid() and current.runner_alive


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[int], None]:
    """Call with the number of files lost once the fault's assertions are about to run."""
    outcome: dict[str, int] = {}

    def record(files_lost: int) -> None:
        outcome["files_lost"] = files_lost

    yield record  # type: ignore[misc]
    target = os.environ.get(REPORT_ENV)
    if target:
        rep = getattr(request.node, "rep_call", None)
        survived = bool(rep is not None and rep.passed)
        line = {
            "fault": request.node.name,
            "survived": survived,
            "skipped": bool(rep is not None and rep.skipped),
            "files_lost": outcome.get("files_lost", -1),
        }
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    result = outcome.get_result()  # type: ignore[attr-defined]
    if result.when == "call":
        item.rep_call = result  # type: ignore[attr-defined]
