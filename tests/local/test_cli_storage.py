"""``azbai storage …`` through click's CliRunner, against the real emulator."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from azbai.cli import main
from azbai.local.azurite import Emulator
from azbai.local.stores import BlobStore
from azbai.local.workspace import Workspace

from .conftest import ACCOUNT, unique

pytestmark = pytest.mark.azurite


def run(workspace: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["storage", "--workspace", str(workspace), *args], catch_exceptions=False)


@pytest.fixture
def container(emulator: Emulator) -> Iterator[str]:
    name = unique("cli")
    yield name
    BlobStore.open(emulator.workspace, ACCOUNT, name).delete_container()


def make_tree(root: Path) -> None:
    for rel, data in {"a.txt": b"a", "sub/b.bin": os.urandom(5000), "sub/deeper/c.txt": b"c"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)


def test_upload_list_download_a_container(emulator: Emulator, container: str, tmp_path: Path) -> None:
    ws = emulator.workspace.root
    make_tree(tmp_path / "src")
    result = run(ws, "upload", "--account", ACCOUNT, "--container", container, "--source", str(tmp_path / "src"),
                 "--destination-path", "inputs")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("uploaded 3 file(s)")

    result = run(ws, "list", "--account", ACCOUNT, "--container", container)
    assert result.exit_code == 0, result.output
    port = emulator.state().port  # type: ignore[union-attr]
    base = f"http://127.0.0.1:{port}/{ACCOUNT}/{container}"
    assert result.stdout.splitlines() == [
        f"{base}/inputs/a.txt",
        f"{base}/inputs/sub/b.bin",
        f"{base}/inputs/sub/deeper/c.txt",
    ]
    result = run(ws, "list", "--account", ACCOUNT, "--container", container, "--prefix", "inputs/sub/d")
    assert result.stdout.splitlines() == [f"{base}/inputs/sub/deeper/c.txt"]

    dest = tmp_path / "dst"
    result = run(ws, "download", "--account", ACCOUNT, "-c", container, "--source-path", "inputs",
                 "--destination", str(dest), "--incremental")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (dest / "sub" / "b.bin").read_bytes() == (tmp_path / "src" / "sub" / "b.bin").read_bytes()
    result = run(ws, "download", "--account-name", ACCOUNT, "-c", container, "--source-path", "inputs",
                 "--destination", str(dest), "--incremental")  # fmt: skip
    assert "downloaded 0 file(s)" in result.stdout and "skipped 3 unchanged" in result.stdout


def test_upload_and_list_a_share(tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    ws = tmp_path / "ws"
    result = run(ws, "upload", "--account", ACCOUNT, "--share", "models", "--source", str(tmp_path / "src"))
    assert result.exit_code == 0, result.output
    result = run(ws, "list", "--account", ACCOUNT, "--share", "models", "--long")
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert lines[0].split() == [
        "1",
        "0cc175b9c0f1b6a831c399e269772661",
        (ws / "shares" / ACCOUNT / "models" / "a.txt").as_uri(),
    ]
    assert not (ws / "azurite.json").exists()  # shares need no emulator


@pytest.mark.parametrize("which", [[], ["--container", "abc", "--share", "abc"]])
def test_exactly_one_of_container_and_share(tmp_path: Path, which: list[str]) -> None:
    result = run(tmp_path, "list", "--account", ACCOUNT, *which)
    assert result.exit_code == 2
    assert "exactly one of --container and --share" in result.stderr


def test_errors_print_without_a_traceback(tmp_path: Path) -> None:
    result = run(tmp_path, "list", "--account", ACCOUNT, "--share", "Bad_Name")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: invalid share name 'Bad_Name'")
    assert "Traceback" not in result.output
    result = run(tmp_path, "list", "--account", ACCOUNT, "--share", "nosuchshare")
    assert result.exit_code == 1 and "does not exist" in result.stderr


def test_start_status_stop(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    try:
        assert run(ws, "status").stdout == "Azurite stopped\n"
        started = run(ws, "start", "--account", "mydata")
        assert started.exit_code == 0, started.output
        assert (
            "started on http://127.0.0.1:" in started.stdout and "devstoreaccount1, mydata" in started.stdout
        )
        assert "already running" in run(ws, "start").stdout
        status = run(ws, "status")
        assert status.stdout.startswith("Azurite running on http://127.0.0.1:")
        stopped = run(ws, "stop")
        assert stopped.stdout.startswith("stopped Azurite (pid ")
        assert run(ws, "status").stdout == "Azurite stopped\n"
        assert run(ws, "stop").stdout == "Azurite is not running\n"
    finally:
        Emulator(Workspace(ws)).stop()


def test_workspace_defaults_to_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZBAI_WORKSPACE", str(tmp_path / "fromenv"))
    (tmp_path / "f.txt").write_text("x")
    result = CliRunner().invoke(
        main,
        [
            "storage",
            "upload",
            "--account",
            ACCOUNT,
            "--share",
            "envshare",
            "--source",
            str(tmp_path / "f.txt"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "fromenv" / "shares" / ACCOUNT / "envshare" / "f.txt").read_text() == "x"


def test_item2_upload_of_a_directory_keeps_files_named_azbai(
    emulator: Emulator, container: str, tmp_path: Path
) -> None:
    make_tree(tmp_path / "src")
    (tmp_path / "src" / ".azbai-notes.txt").write_bytes(b"user data")
    result = run(emulator.workspace.root, "upload", "--account", ACCOUNT, "--container", container,
                 "--source", str(tmp_path / "src"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("uploaded 4 file(s)")
    assert (
        BlobStore.open(emulator.workspace, ACCOUNT, container).read_bytes(".azbai-notes.txt") == b"user data"
    )


def test_item1_storage_start_with_a_new_account_keeps_the_running_emulator(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    emulator = Emulator(Workspace(ws))
    try:
        assert run(ws, "start").exit_code == 0
        before = emulator.state()
        result = run(ws, "start", "--account", "otheracct")
        assert result.exit_code == 0, result.output
        after = emulator.state()
        assert before is not None and after is not None
        assert (after.pid, after.port) == (before.pid, before.port) and "otheracct" in after.accounts
        BlobStore.open(emulator.workspace, "otheracct", "box").write_bytes("x", b"1")
    finally:
        emulator.stop()
