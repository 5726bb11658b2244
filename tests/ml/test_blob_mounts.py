"""``ro_mount`` and ``rw_mount`` of a blob datastore path, in each way a local job mounts one (``blob_mount``:
a lazy FUSE mount, or the mirror): real Azurite, real job processes doing the file system work, the container
checked afterwards."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from azbai.errors import MlJobFailed
from azbai.local import blobfuse
from azbai.local.azurite import DEV_ACCOUNT
from azbai.local.stores import BlobStore, open_store
from azbai.local.workspace import Workspace
from azbai.ml.runs import FINISHED, RunBook, RunRecord, pid_alive
from azbai.ml.service import create_job, show_job
from tests.ml.conftest import register_blob_datastore, run_v2

pytestmark = pytest.mark.azurite

BIG = 8 << 20  # each of the big blobs: a mirror downloads them all, a lazy mount none


def container(workspace: Workspace, name: str) -> BlobStore:
    store = open_store(workspace, DEV_ACCOUNT, container=name)
    assert isinstance(store, BlobStore)
    return store


def job(tmp_path: Path, workspace: Workspace, container_name: str, script: str, extra: str = "") -> Path:
    """A command job running ``script`` with an ``ro_mount`` input ``data`` (``in/``) and an ``rw_mount`` output
    ``out`` (``out/``) of one container."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src/job.py").write_text(script)
    register_blob_datastore(workspace, tmp_path, container_name)
    file = tmp_path / "job.yml"
    file.write_text(
        f"""\
type: command
code: ./src
command: python job.py ${{{{inputs.data}}}} ${{{{outputs.out}}}}
environment: {{image: python:3.11}}
{extra}
inputs:
  data: {{type: uri_folder, path: azureml://datastores/{container_name}/paths/in, mode: ro_mount}}
outputs:
  out: {{type: uri_folder, path: azureml://datastores/{container_name}/paths/out, mode: rw_mount}}
"""
    )
    return file


def report(run: RunRecord) -> dict[str, object]:
    lines = (run.logs_dir / "std_log.txt").read_text().splitlines()
    return dict(json.loads(next(line for line in lines if line.startswith("{"))))


def cached(run: RunRecord, kind: str, name: str) -> list[str]:
    """The files a lazy mount fetched or the job wrote (its cache)."""
    cache = run.path / "data" / "mount-cache" / kind / name
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())


def test_an_ro_mount_fetches_only_what_the_job_reads(
    ml_workspace: Workspace, tmp_path: Path, blob_mount: str
) -> None:
    store = container(ml_workspace, f"ro-{blob_mount}")
    store.write_bytes("in/small.txt", b"abc")
    for index in range(3):
        store.write_bytes(f"in/big/{index}.bin", os.urandom(BIG))
    script = """\
import json, os, sys
data = sys.argv[1]
print(json.dumps({"small": open(os.path.join(data, "small.txt")).read(),
                  "listing": sorted(os.listdir(data)), "big": sorted(os.listdir(os.path.join(data, "big"))),
                  "size": os.path.getsize(os.path.join(data, "big", "0.bin"))}), flush=True)
"""
    started = time.monotonic()
    run = run_v2(ml_workspace, job(tmp_path, ml_workspace, store.name, script))
    seconds = time.monotonic() - started
    assert report(run) == {
        "small": "abc", "listing": ["big", "small.txt"], "big": ["0.bin", "1.bin", "2.bin"], "size": BIG,
    }  # fmt: skip
    if blob_mount == "fuse":
        assert cached(run, "inputs", "data") == ["small.txt"]  # listed and stat'ed, never fetched
    else:
        folder = run.path / "data" / "inputs" / "data" / "big"
        assert sorted(p.name for p in folder.iterdir()) == ["0.bin", "1.bin", "2.bin"]
    assert blobfuse.mounts_under(run.path) == []
    print(f"{blob_mount}: a 3-byte read of a {3 * BIG + 3}-byte ro_mount: {seconds:.2f} s")


def test_writing_to_an_ro_mount_fails_and_reaches_nothing(
    ml_workspace: Workspace, tmp_path: Path, blob_mount: str
) -> None:
    store = container(ml_workspace, f"erofs-{blob_mount}")
    store.write_bytes("in/a.txt", b"alpha")
    script = """\
import errno, json, os, sys
data = sys.argv[1]
def code(call, *args):
    try:
        call(*args)
    except OSError as exc:
        return errno.errorcode[exc.errno]
    return "ok"
print(json.dumps({
    "create": code(lambda: open(os.path.join(data, "new.txt"), "w").close()),
    "append": code(lambda: open(os.path.join(data, "a.txt"), "a").close()),
    "remove": code(os.remove, os.path.join(data, "a.txt")),
    "mkdir": code(os.mkdir, os.path.join(data, "d")),
    "rename": code(os.rename, os.path.join(data, "a.txt"), os.path.join(data, "b.txt")),
    "chmod": code(os.chmod, os.path.join(data, "a.txt"), 0o600),
    "read": open(os.path.join(data, "a.txt")).read() if os.path.exists(os.path.join(data, "a.txt")) else None,
}), flush=True)
"""
    run = run_v2(ml_workspace, job(tmp_path, ml_workspace, store.name, script))
    seen = report(run)
    if blob_mount == "fuse":
        erofs = errno.errorcode[errno.EROFS]
        assert seen == {k: erofs for k in ("create", "append", "remove", "mkdir", "rename", "chmod")} | {
            "read": "alpha"
        }
    # a mirror is a private copy the job may scribble on: either way nothing of it reaches the container
    assert {e.path: store.read_bytes(e.path) for e in store.list("in/")} == {"in/a.txt": b"alpha"}


RW_SCRIPT = """\
import os, sys
out = sys.argv[2]
open(os.path.join(out, "new.txt"), "w").write("new")
open(os.path.join(out, "changed.txt"), "a").write(" and more")
os.remove(os.path.join(out, "removed.txt"))
os.makedirs(os.path.join(out, "deep/er"))
open(os.path.join(out, "deep/er/file.txt"), "w").write("deep")
os.rename(os.path.join(out, "sub/old.txt"), os.path.join(out, "sub/renamed.txt"))
print("{}", flush=True)
if os.environ.get("FAIL"):
    sys.exit(5)
"""


def rw_container(workspace: Workspace, name: str) -> tuple[BlobStore, str]:
    store = container(workspace, name)
    big = os.urandom(BIG)
    store.write_bytes("out/never-opened.bin", big)
    store.write_bytes("out/changed.txt", b"before")
    store.write_bytes("out/removed.txt", b"gone soon")
    store.write_bytes("out/sub/old.txt", b"moved")
    return store, hashlib.md5(big).hexdigest()


def check_written_back(store: BlobStore, big_md5: str) -> None:
    contents = {e.path: e for e in store.list("out/")}
    assert sorted(contents) == [
        "out/changed.txt", "out/deep/er/file.txt", "out/never-opened.bin", "out/new.txt", "out/sub/renamed.txt",
    ]  # fmt: skip
    assert store.read_bytes("out/changed.txt") == b"before and more"
    assert (store.read_bytes("out/new.txt"), store.read_bytes("out/deep/er/file.txt")) == (b"new", b"deep")
    assert store.read_bytes("out/sub/renamed.txt") == b"moved"
    assert hashlib.md5(store.read_bytes("out/never-opened.bin")).hexdigest() == big_md5


@pytest.mark.parametrize("fails", [False, True], ids=["succeeds", "fails"])
def test_an_rw_mount_writes_back_changes_and_keeps_never_opened_blobs(
    ml_workspace: Workspace, tmp_path: Path, blob_mount: str, fails: bool
) -> None:
    store, big_md5 = rw_container(ml_workspace, f"rw-{blob_mount}-{int(fails)}")
    file = job(
        tmp_path, ml_workspace, store.name, RW_SCRIPT, "environment_variables: {FAIL: '1'}" if fails else ""
    )
    if fails:
        with pytest.raises(MlJobFailed, match="exit code 5"):
            run_v2(ml_workspace, file, name=store.name)
        run = RunBook(ml_workspace).get(store.name)  # by name: runs created in one second list in any order
    else:
        run = run_v2(ml_workspace, file)
    check_written_back(store, big_md5)  # a failed job's partial outputs are kept too
    if blob_mount == "fuse":
        assert "never-opened.bin" not in cached(run, "outputs", "out")
        # the run's recorded path now shows what the job fetched and wrote
        assert Path(run.outputs["out"]["path"]).is_symlink()
        assert (Path(run.outputs["out"]["path"]) / "new.txt").read_text() == "new"
    assert blobfuse.mounts_under(run.path) == []


def test_a_killed_job_process_is_unmounted_and_written_back(
    ml_workspace: Workspace, tmp_path: Path, blob_mount: str
) -> None:
    store, big_md5 = rw_container(ml_workspace, f"kill-{blob_mount}")
    pid_file = tmp_path / "job.pid"
    script = (
        RW_SCRIPT + f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\nimport time; time.sleep(60)\n"
    )
    record = create_job(
        ml_workspace, job(tmp_path, ml_workspace, store.name, script), name=f"kill-{blob_mount}"
    )
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.1)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    while (record := show_job(ml_workspace, record.name)).status not in FINISHED:
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(0.1)
    assert record.status == "Failed" and record.exit_code == 128 + signal.SIGKILL
    check_written_back(store, big_md5)
    assert blobfuse.mounts_under(record.path) == []


def test_a_dead_runner_s_mounts_are_detached_by_job_show(
    ml_workspace: Workspace, tmp_path: Path, blob_mount: str
) -> None:
    store, _ = rw_container(ml_workspace, f"dead-{blob_mount}")
    pid_file = tmp_path / "job.pid"
    script = f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n"
    record = create_job(
        ml_workspace, job(tmp_path, ml_workspace, store.name, script), name=f"dead-{blob_mount}"
    )
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.1)
    job_pid = int(pid_file.read_text())
    try:
        runner = RunBook(ml_workspace).get(record.name).pid
        assert runner is not None
        if blob_mount == "fuse":
            assert len(blobfuse.mounts_under(record.path)) == 2  # served by the runner
        os.kill(runner, signal.SIGKILL)
        while pid_alive(runner):
            assert time.monotonic() < deadline, "the runner did not die"
            time.sleep(0.05)
        assert show_job(ml_workspace, record.name).status == "Failed"
        assert blobfuse.mounts_under(record.path) == []
        assert not pid_alive(job_pid)  # the job's process outlived its runner: the look stopped it
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(job_pid, signal.SIGKILL)  # should the test fail before the look stopped it
