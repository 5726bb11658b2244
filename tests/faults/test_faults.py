"""Nothing lost under faults (issue 11): real Azurite, real runners, launchers and job processes.

Each test injects one fault into the writer job (tests/faults/writer.py), then asserts the reported state, that
every file the job completed before the fault is in storage with its MD5, and that a rerun works.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from azbai.errors import JobError
from azbai.local.service import delete_job, list_files, terminate_job
from tests.faults.conftest import Faulty, wait_for

pytestmark = pytest.mark.azurite


def go(ledger: Path) -> None:
    (ledger / "go").touch()


def rerun_works(faulty: Faulty, name: str) -> None:
    record, ledger = faulty.start(name, faulty.job_file(count=3), wait=True)
    assert record.state == "succeeded", record.errors
    assert not faulty.lost(record, ledger)


def test_emulator_stopped_mid_job(faulty: Faulty, report: Callable[[int], None]) -> None:
    record, ledger = faulty.start("stopped", faulty.job_file(pause_at=5))
    wait_for(ledger / "paused")
    faulty.emulator.stop()
    go(ledger)
    record = faulty.wait("stopped")
    lost = faulty.lost(record, ledger)
    report(len(lost))
    assert record.state == "succeeded", record.errors  # stage-out started the emulator again, as any command
    assert not lost
    rerun_works(faulty, "stopped-again")


def test_emulator_killed_mid_job(faulty: Faulty, report: Callable[[int], None]) -> None:
    record, ledger = faulty.start("killed", faulty.job_file(pause_at=5))
    wait_for(ledger / "paused")
    state = faulty.emulator.state()
    assert state is not None
    os.kill(state.pid, signal.SIGKILL)
    psutil.wait_procs([psutil.Process(state.pid)], timeout=10) if psutil.pid_exists(state.pid) else None
    go(ledger)
    record = faulty.wait("killed")
    lost = faulty.lost(record, ledger)
    report(len(lost))
    assert record.state == "succeeded", record.errors
    assert not lost
    rerun_works(faulty, "killed-again")


def test_emulator_restarted_on_another_port(faulty: Faulty, report: Callable[[int], None]) -> None:
    record, ledger = faulty.start("moved", faulty.job_file(pause_at=5))
    wait_for(ledger / "paused")
    before = faulty.emulator.state()
    assert before is not None
    faulty.emulator.stop()
    with socket.socket() as holder:  # the old port is taken: the emulator must move
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", before.port))
        holder.listen()
        after = faulty.emulator.ensure()
    assert after.port != before.port
    go(ledger)
    record = faulty.wait("moved")
    lost = faulty.lost(record, ledger)
    report(len(lost))
    assert record.state == "succeeded", record.errors
    assert not lost
    rerun_works(faulty, "moved-again")


def test_a_new_account_while_jobs_run(faulty: Faulty, report: Callable[[int], None]) -> None:
    # item 1: `azbai storage start --account other` (or a job naming a new account) while a job runs
    record, ledger = faulty.start("accounts", faulty.job_file(count=150, pause_at=4))
    wait_for(ledger / "paused")
    before = faulty.emulator.state()
    after = faulty.emulator.ensure(["otheraccount"])
    assert before is not None and (after.pid, after.port) == (before.pid, before.port)
    go(ledger)
    record = faulty.wait("accounts", timeout=120)
    lost = faulty.lost(record, ledger)
    report(len(lost))
    assert record.state == "succeeded", record.errors
    assert not lost and len((ledger / "ledger.txt").read_text().splitlines()) == 3 * 150
    rerun_works(faulty, "accounts-again")


@pytest.mark.usefixtures("blob_mount")
def test_runner_sigkilled(faulty: Faulty, report: Callable[[int], None]) -> None:
    # item 3: the job's processes cannot outlive their runner; the next command stages out what they wrote
    record, ledger = faulty.start("orphan", faulty.job_file(pause_at=5))
    wait_for(ledger / "paused")
    script = int((ledger / "pid").read_text())
    runner = faulty.get("orphan").runner_pid
    assert runner
    os.kill(runner, signal.SIGKILL)
    psutil.Process(script).wait(timeout=20)  # the launcher got SIGTERM with its parent, and stopped the job
    record = faulty.wait("orphan")
    lost = faulty.lost(record, ledger)
    report(len(lost))
    assert record.state == "failed"
    assert "runner" in record.errors[0] and "died" in record.errors[0]
    assert record.stage_out == "done" and not lost
    assert terminate_job(record).state == "failed"
    delete_job(record)
    rerun_works(faulty, "orphan-again")


@pytest.mark.usefixtures("blob_mount")
def test_job_process_sigkilled(faulty: Faulty, report: Callable[[int], None]) -> None:
    record, ledger = faulty.start("shot", faulty.job_file(pause_at=5))
    wait_for(ledger / "paused")
    os.kill(int((ledger / "pid").read_text()), signal.SIGKILL)
    record = faulty.wait("shot")
    lost = faulty.lost(record, ledger)
    report(len(lost))
    assert (record.state, record.exit_code) == ("failed", 128 + signal.SIGKILL)
    assert not lost
    rerun_works(faulty, "shot-again")


def test_terminate_during_stage_out(faulty: Faulty, report: Callable[[int], None]) -> None:
    record, ledger = faulty.start("stopping", faulty.job_file(count=150))
    wait_for(ledger / "done", timeout=60)
    record = terminate_job(faulty.get("stopping"))
    record = faulty.wait("stopping")
    lost = faulty.lost(record, ledger)
    report(len(lost))
    assert record.state in ("terminated", "succeeded")  # succeeded when the job ended before the signal
    assert record.stage_out == "done" and not lost
    rerun_works(faulty, "stopping-again")


def test_disk_full_in_an_output(faulty: Faulty, report: Callable[[int], None]) -> None:
    share = faulty.workspace.share_dir("devstoreaccount1", "results")
    share.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(share)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a 1 MiB tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        record, ledger = faulty.start("full", faulty.job_file(count=400), wait=True)
        lost = faulty.lost(record, ledger)
        report(len(lost))
        assert (record.state, record.exit_code) == ("failed", 4)
        assert not lost
    finally:
        subprocess.run(["umount", "-l", str(share)], check=False)
    rerun_works(faulty, "full-again")


@pytest.mark.usefixtures("blob_mount")
def test_a_crash_then_a_rerun(faulty: Faulty, report: Callable[[int], None]) -> None:
    record, ledger = faulty.start("crash", faulty.job_file(crash_at=7), wait=True)
    lost = faulty.lost(record, ledger)
    report(len(lost))
    assert (record.state, record.exit_code) == ("failed", 3)
    assert not lost
    rerun_works(faulty, "crash-again")


@pytest.mark.usefixtures("blob_mount")
def test_stage_out_fails_then_is_retried(faulty: Faulty, report: Callable[[int], None]) -> None:
    # item 4: the emulator cannot come back during stage-out (this runner finds no Azurite to start); nothing is
    # lost, the files are listed where they are, delete refuses, and the next look at the job stages them out
    unstartable = {"AZBAI_AZURITE_BIN": str(faulty.root / "no-azurite-here")}
    record, ledger = faulty.start("stranded", faulty.job_file(pause_at=5), env=unstartable)
    wait_for(ledger / "paused")
    faulty.emulator.stop()
    go(ledger)
    deadline = time.monotonic() + 60
    while not (record := faulty.get_only("stranded")).finished or record.stage_out == "pending":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert (record.state, record.exit_code, record.stage_out) == ("failed", 0, "failed")
    assert "stage-out failed" in " ".join(record.errors)
    with pytest.MonkeyPatch.context() as patch:  # storage is still down for this process too: a retry fails
        patch.setenv("AZBAI_AZURITE_BIN", unstartable["AZBAI_AZURITE_BIN"])
        assert {f.name for f in list_files(record, "BLOB")} >= {".azbai-first.bin", "part-0004.bin"}
        with pytest.raises(JobError, match="only copy"):
            delete_job(record)
        assert faulty.get("stranded").stage_out == "failed"
    record = faulty.wait("stranded")  # JobBook.get: the look that retries (this process can start Azurite)
    lost = faulty.lost(record, ledger)
    report(len(lost))
    assert (record.state, record.stage_out) == ("succeeded", "done"), record.errors
    assert not lost
    rerun_works(faulty, "stranded-again")


def test_concurrent_jobs_on_one_workspace(faulty: Faulty, report: Callable[[int], None]) -> None:
    started = [faulty.start(f"many{i}", faulty.job_file(count=30, pause_at=3)) for i in range(3)]
    for _record, ledger in started:
        wait_for(ledger / "paused")
    faulty.emulator.ensure(["thirdaccount"])
    for _record, ledger in started:
        go(ledger)
    lost: list[str] = []
    for i, (_record, ledger) in enumerate(started):
        record = faulty.wait(f"many{i}", timeout=120)
        assert record.state == "succeeded", record.errors
        lost += faulty.lost(record, ledger)
    report(len(lost))
    assert not lost
