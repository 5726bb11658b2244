"""The emulator's lifecycle: start on demand, reuse, stop by PID, restart with data, accounts, stale state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from azbai.errors import StorageError
from azbai.local import azurite
from azbai.local.azurite import DEV_ACCOUNT, Emulator, blob_service_client, find_azurite
from azbai.local.stores import BlobStore

pytestmark = pytest.mark.azurite


def alive(pid: int) -> bool:
    return azurite._cmdline(pid) is not None


def test_ensure_twice_reuses_the_same_process(fresh_emulator: Emulator) -> None:
    first = fresh_emulator.ensure()
    second = fresh_emulator.ensure()
    assert (second.pid, second.port) == (first.pid, first.port)
    assert first.accounts == (DEV_ACCOUNT,)
    assert fresh_emulator.status().running
    recorded = json.loads(fresh_emulator.workspace.azurite_state.read_text())
    assert recorded["pid"] == first.pid and recorded["port"] == first.port
    assert "key" not in json.dumps(recorded).lower()
    assert "--location" in azurite._cmdline(first.pid)  # type: ignore[operator]


def test_stop_ends_the_process_and_status_says_stopped(fresh_emulator: Emulator) -> None:
    state = fresh_emulator.ensure()
    assert fresh_emulator.stop() == state
    assert not alive(state.pid)
    status = fresh_emulator.status()
    assert (status.running, status.detail) == (False, "stopped")
    assert not fresh_emulator.workspace.azurite_state.exists()
    assert fresh_emulator.stop() is None


def test_a_restart_keeps_the_data(fresh_emulator: Emulator) -> None:
    store = BlobStore.open(fresh_emulator.workspace, "keepdata", "kept")
    store.write_bytes("a/b.txt", b"persisted")
    first = fresh_emulator.stop()
    assert first is not None
    second = fresh_emulator.ensure(["keepdata"])
    assert second.pid != first.pid
    store = BlobStore.open(fresh_emulator.workspace, "keepdata", "kept")
    assert store.read_bytes("a/b.txt") == b"persisted"


def test_a_new_account_is_added_without_a_restart_and_both_work(fresh_emulator: Emulator) -> None:
    # issue 11 item 1: a restart would break every job and command using the emulator
    one = fresh_emulator.ensure(["acctone"])
    BlobStore.open(fresh_emulator.workspace, "acctone", "box").write_bytes("x", b"one")
    two = fresh_emulator.ensure(["accttwo"])
    assert (two.pid, two.port) == (one.pid, one.port) and alive(one.pid) and two.live_accounts
    assert set(two.accounts) == {DEV_ACCOUNT, "acctone", "accttwo"}
    BlobStore.open(fresh_emulator.workspace, "accttwo", "box").write_bytes("x", b"two")
    assert BlobStore.open(fresh_emulator.workspace, "acctone", "box").read_bytes("x") == b"one"
    assert BlobStore.open(fresh_emulator.workspace, "accttwo", "box").read_bytes("x") == b"two"
    assert fresh_emulator.ensure(["acctone", "accttwo"]).pid == two.pid  # nothing new: no restart


def test_an_undeclared_account_is_refused(fresh_emulator: Emulator) -> None:
    state = fresh_emulator.ensure()
    from azure.core.exceptions import HttpResponseError

    client = blob_service_client(state.port, "nosuchacct")
    with pytest.raises(HttpResponseError) as info:  # Azurite answers ResourceNotFound, not an auth error
        list(client.list_containers())
    assert info.value.status_code == 404


def test_a_stale_state_file_with_a_dead_pid_is_replaced(fresh_emulator: Emulator) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ws = fresh_emulator.workspace.ensure()
    ws.azurite_state.write_text(
        json.dumps(
            {
                "pid": dead.pid,
                "port": 1,
                "accounts": ["olddata"],
                "started": 0,
                "location": str(ws.azurite_dir),
            }
        )
    )
    status = fresh_emulator.status()
    assert not status.running and "stale" in status.detail
    state = fresh_emulator.ensure()
    assert state.pid != dead.pid and fresh_emulator.status().running
    assert "olddata" in state.accounts  # accounts declared before stay declared


def test_stop_with_a_stale_state_file_removes_it_and_signals_nothing(fresh_emulator: Emulator) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    ws = fresh_emulator.workspace.ensure()
    ws.azurite_state.write_text(
        json.dumps(
            {"pid": dead.pid, "port": 1, "accounts": [], "started": 0, "location": str(ws.azurite_dir)}
        )
    )
    assert fresh_emulator.stop() is None
    assert not ws.azurite_state.exists()


def test_a_stale_state_naming_someone_elses_process_leaves_it_alone(fresh_emulator: Emulator) -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ws = fresh_emulator.workspace.ensure()
        ws.azurite_state.write_text(
            json.dumps(
                {
                    "pid": bystander.pid,
                    "port": 9,
                    "accounts": [],
                    "started": 0,
                    "location": str(ws.azurite_dir),
                }
            )
        )
        state = fresh_emulator.ensure()
        assert state.pid != bystander.pid
        fresh_emulator.stop()
        assert bystander.poll() is None  # never signalled
    finally:
        bystander.kill()
        bystander.wait()


def test_an_emulator_whose_state_file_was_lost_is_replaced_not_doubled(fresh_emulator: Emulator) -> None:
    lost = fresh_emulator.ensure()
    fresh_emulator.workspace.azurite_state.unlink()
    state = fresh_emulator.ensure()
    assert state.pid != lost.pid and not alive(lost.pid)
    assert azurite._orphans(state.location) == [state.pid]


@pytest.mark.parametrize(
    "content", ["{not json", "[]", '{"pid": 1, "port": 2, "location": "x", "accounts": ["a:key;evil"]}']
)
def test_a_malformed_state_file_counts_as_none(fresh_emulator: Emulator, content: str) -> None:
    ws = fresh_emulator.workspace.ensure()
    ws.azurite_state.write_text(content)
    assert fresh_emulator.status().detail == "stopped"
    assert fresh_emulator.ensure().accounts == (DEV_ACCOUNT,)


def test_start_refuses_when_already_running(fresh_emulator: Emulator) -> None:
    state = fresh_emulator.start()
    with pytest.raises(StorageError, match=f"already running.*pid {state.pid}"):
        fresh_emulator.start()


def test_the_emulator_outlives_the_process_that_started_it(fresh_emulator: Emulator) -> None:
    code = (
        "import sys; from azbai.local.azurite import Emulator; from azbai.local.workspace import Workspace;"
        "print(Emulator(Workspace.resolve(sys.argv[1])).ensure().pid)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(fresh_emulator.workspace.root)],
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(out.stdout)
    status = fresh_emulator.status()
    assert status.running and status.state is not None and status.state.pid == pid
    assert os.getsid(pid) == pid  # its own session


def test_a_dead_emulator_fails_in_seconds(fresh_emulator: Emulator) -> None:
    state = fresh_emulator.ensure()
    store = BlobStore.open(fresh_emulator.workspace, DEV_ACCOUNT, "gone")
    fresh_emulator.stop()
    started = time.monotonic()
    with pytest.raises(StorageError, match="does not answer"):
        store.list()
    assert time.monotonic() - started < 15  # the SDK's default retries take 80 s
    assert not alive(state.pid)


def test_connection_string_works_with_the_sdk(fresh_emulator: Emulator) -> None:
    from azure.storage.blob import BlobServiceClient

    conn = fresh_emulator.connection_string("connacct")
    client = BlobServiceClient.from_connection_string(conn)
    client.create_container("viaconn")
    assert [c.name for c in client.list_containers()] == ["viaconn"]


@pytest.mark.parametrize("name", ["ab", "Upper", "with-hyphen", "a" * 25, ""])
def test_account_names_are_validated(fresh_emulator: Emulator, name: str) -> None:
    with pytest.raises(StorageError, match="invalid storage account name"):
        fresh_emulator.ensure([name])
    assert fresh_emulator.state() is None  # nothing was started


def test_find_azurite_explains_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(azurite.AZURITE_BIN_ENV, raising=False)
    monkeypatch.setattr(azurite, "__file__", str(tmp_path / "azbai" / "local" / "azurite.py"))
    monkeypatch.setattr(azurite.shutil, "which", lambda name: None)
    with pytest.raises(StorageError, match="make setup"):
        find_azurite()
    monkeypatch.setenv(azurite.AZURITE_BIN_ENV, str(tmp_path / "missing"))
    with pytest.raises(StorageError, match="not an executable"):
        find_azurite()


def test_a_failing_start_reports_the_log(tmp_path: Path) -> None:
    fake = tmp_path / "azurite-blob"
    fake.write_text("#!/bin/sh\necho 'something is badly wrong' >&2\nexit 3\n")
    fake.chmod(0o755)
    from azbai.local.workspace import Workspace

    emulator = Emulator(Workspace(tmp_path / "ws"), binary=fake)
    with pytest.raises(StorageError, match=r"(?s)exited while starting.*something is badly wrong"):
        emulator.ensure()
    assert emulator.state() is None
