"""Lazy blob mounts (azbai/local/blobfuse.py) end to end: real Azurite, a real FUSE mount, real job processes.

The job's command line does the file system work (shell tools and small Python programs), so every request goes
through the kernel as it would for a training script; the container is checked afterwards.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import azbai
from azbai.errors import JobFailed
from azbai.local import blobfuse
from azbai.local.azurite import DEV_ACCOUNT, Emulator
from azbai.local.jobs import JobBook, JobRecord
from azbai.local.runner import BLOB_MOUNT_ENV
from azbai.local.service import create_job, delete_job, stream_file
from azbai.local.stores import BlobStore, open_store
from azbai.local.workspace import Workspace
from tests.local.conftest import unique

pytestmark = [
    pytest.mark.azurite,
    pytest.mark.skipif(
        blobfuse.fuse_unavailable() is not None, reason=f"no FUSE mount here: {blobfuse.fuse_unavailable()}"
    ),
]
M = "$AZ_BATCHAI_JOB_MOUNT_ROOT/m"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    workspace = Workspace(tmp_path_factory.mktemp("blobfuse-ws"))
    emulator = Emulator(workspace)
    emulator.ensure()
    try:
        yield workspace
    finally:
        emulator.stop()


@pytest.fixture
def container(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[BlobStore]:
    """A fresh container, mounted with FUSE (``fuse``: a mirror would not do) by the jobs of the test."""
    monkeypatch.setenv(BLOB_MOUNT_ENV, "fuse")
    store = open_store(workspace, DEV_ACCOUNT, container=unique("c"))
    assert isinstance(store, BlobStore)
    try:
        yield store
    finally:
        store.delete_container()


def job_file(tmp_path: Path, container: str, command: str) -> Path:
    spec = {
        "properties": {
            "nodeCount": 1,
            "customToolkitSettings": {"commandLine": command},
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP",
            "mountVolumes": {
                "azureBlobFileSystems": [
                    {"accountName": DEV_ACCOUNT, "containerName": container, "relativeMountPath": "m"}
                ]
            },
        }
    }
    path = tmp_path / f"{unique('job')}.json"
    path.write_text(json.dumps(spec))
    return path


def run(workspace: Workspace, tmp_path: Path, store: BlobStore, command: str, **options: Any) -> JobRecord:
    plan = azbai.load(job_file(tmp_path, store.name, command))
    return create_job(workspace, plan, **{"name": unique("j"), **options})


def stdout(record: JobRecord) -> str:
    return b"".join(stream_file(record, "stdout.txt", follow=False)).decode()


def cached(record: JobRecord) -> list[str]:
    """What the mount fetched or the job wrote: the files of its cache."""
    cache = record.work_dir / "azbai" / "mount-cache" / "m"
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())


def contents(store: BlobStore) -> dict[str, bytes]:
    return {e.path: store.read_bytes(e.path) for e in store.list()}


def python(tmp_path: Path, code: str) -> str:
    """A job command line running the Python program ``code``."""
    script = tmp_path / f"{unique('script')}.py"
    script.write_text(code)
    return f"python {script}"


def test_a_small_read_fetches_only_the_file_read(
    workspace: Workspace, tmp_path: Path, container: BlobStore
) -> None:
    big = os.urandom(3 << 20)
    for i in range(3):
        container.write_bytes(f"data/part-{i}.bin", big)
    container.write_bytes("small.txt", b"abcdef")
    record = run(workspace, tmp_path, container, f"head -c 3 {M}/small.txt; ls {M}/data", wait=True)
    assert stdout(record) == "abcpart-0.bin\npart-1.bin\npart-2.bin\n"
    assert cached(record) == ["small.txt"]  # listing a directory fetches nothing; reading a file fetches it
    assert (record.work_dir / "azbai" / "mount-cache" / "m" / "small.txt").read_bytes() == b"abcdef"
    assert [e.path for e in container.list()] == [*(f"data/part-{i}.bin" for i in range(3)), "small.txt"]
    assert not blobfuse.mounts_under(record.path)  # unmounted when the job ended


def test_a_job_reads_writes_renames_and_deletes_through_the_mount(
    workspace: Workspace, tmp_path: Path, container: BlobStore
) -> None:
    for name, data in {
        "in/a.txt": b"a\n",
        "in/gone.txt": b"delete me\n",
        "in/append.txt": b"first\n",
        "in/cut.txt": b"0123456789",
        "in/empty-me.txt": b"soon nothing",
        "in/move-me.txt": b"moved\n",
        "tree/x/1.txt": b"one",
        "tree/x/2.txt": b"two",
        "never/opened.bin": b"n" * 1000,
        "tool.sh": b"#!/bin/sh\necho tool ran\n",
    }.items():
        container.write_bytes(name, data)
    command = " && ".join(
        [
            f"cat {M}/in/a.txt > {M}/in/copy.txt",
            f"rm {M}/in/gone.txt",
            f"echo second >> {M}/in/append.txt",
            f"truncate -s 4 {M}/in/cut.txt",
            f": > {M}/in/empty-me.txt",
            f"mkdir -p {M}/out/deep/er && mv {M}/in/move-me.txt {M}/out/moved.txt",
            f"echo nested > {M}/out/deep/er/n.txt",
            f"mv {M}/tree {M}/forest",
            f"mkdir {M}/made && rmdir {M}/made",
            f"chmod +x {M}/tool.sh && {M}/tool.sh",
            f"ls {M}/in",
        ]
    )
    record = run(workspace, tmp_path, container, command, wait=True)
    assert stdout(record).split("\n", 1)[0] == "tool ran"
    assert stdout(record).split()[2:] == ["a.txt", "append.txt", "copy.txt", "cut.txt", "empty-me.txt"]
    assert contents(container) == {
        "in/a.txt": b"a\n",
        "in/copy.txt": b"a\n",
        "in/append.txt": b"first\nsecond\n",
        "in/cut.txt": b"0123",
        "in/empty-me.txt": b"",
        "out/moved.txt": b"moved\n",
        "out/deep/er/n.txt": b"nested\n",
        "forest/x/1.txt": b"one",
        "forest/x/2.txt": b"two",
        "never/opened.bin": b"n" * 1000,  # listed, never opened: neither fetched nor taken for deleted
        "tool.sh": b"#!/bin/sh\necho tool ran\n",
    }
    assert "never/opened.bin" not in cached(record)
    assert "in/empty-me.txt" in cached(record)  # truncated to nothing: created empty, not downloaded first


def test_errors_reach_the_job_with_their_errno(
    workspace: Workspace, tmp_path: Path, container: BlobStore
) -> None:
    container.write_bytes("d/listed.txt", b"x")
    code = """
import errno, json, os
m = os.path.join(os.environ["AZ_BATCHAI_JOB_MOUNT_ROOT"], "m")
def code(call, *args):
    try:
        call(*args)
    except OSError as exc:
        return errno.errorcode[exc.errno]
    return "ok"
print(json.dumps({
    "open missing": code(open, os.path.join(m, "missing.txt")),
    "rmdir not empty": code(os.rmdir, os.path.join(m, "d")),
    "open a directory to write": code(open, os.path.join(m, "d"), "w"),
    "unlink a directory": code(os.unlink, os.path.join(m, "d")),
    "mkdir over a file": code(os.mkdir, os.path.join(m, "d", "listed.txt")),
    "exclusive create over a file": code(os.open, os.path.join(m, "d", "listed.txt"), os.O_CREAT | os.O_EXCL | os.O_WRONLY),
    "a file as a directory": code(open, os.path.join(m, "d", "listed.txt", "x")),
}))
"""
    record = run(workspace, tmp_path, container, python(tmp_path, code), wait=True)
    assert json.loads(stdout(record)) == {
        "open missing": "ENOENT",
        "rmdir not empty": "ENOTEMPTY",
        "open a directory to write": "EISDIR",
        "unlink a directory": "EISDIR",
        "mkdir over a file": "EEXIST",
        "exclusive create over a file": "EEXIST",
        "a file as a directory": "ENOTDIR",
    }
    assert contents(container) == {"d/listed.txt": b"x"}


def test_large_files_read_back_byte_exact_by_concurrent_readers(
    workspace: Workspace, tmp_path: Path, container: BlobStore
) -> None:
    """Files larger than a FUSE read (up to 1 MiB) and than the read-ahead, read by four processes at once."""
    blobs = {f"big-{i}.bin": os.urandom((5 << 20) + 12345 * i) for i in range(3)}
    for name, data in blobs.items():
        container.write_bytes(name, data)
    readers = [f"md5sum {M}/{name} &" for name in [*blobs, "big-0.bin"]]
    record = run(workspace, tmp_path, container, " ".join(readers) + " wait", wait=True)
    sums = sorted(line.split()[0] + " " + Path(line.split()[1]).name for line in stdout(record).splitlines())
    expected = [
        hashlib.md5(data).hexdigest() + " " + name
        for name, data in [*blobs.items(), ("big-0.bin", blobs["big-0.bin"])]
    ]
    assert sums == sorted(expected)
    assert cached(record) == sorted(blobs)
    assert {e.path: e.size for e in container.list()} == {
        n: len(d) for n, d in blobs.items()
    }  # nothing rewritten


def test_a_large_write_is_written_back_byte_exact(
    workspace: Workspace, tmp_path: Path, container: BlobStore
) -> None:
    code = """
import hashlib, os
path = os.path.join(os.environ["AZ_BATCHAI_JOB_MOUNT_ROOT"], "m", "out", "written.bin")
os.makedirs(os.path.dirname(path))
data = os.urandom((6 << 20) + 7)
with open(path, "wb") as out:
    for i in range(0, len(data), 300_000):
        out.write(data[i : i + 300_000])
with open(path, "rb") as back:
    assert back.read() == data
print(hashlib.md5(data).hexdigest())
"""
    record = run(workspace, tmp_path, container, python(tmp_path, code), wait=True)
    assert hashlib.md5(container.read_bytes("out/written.bin")).hexdigest() == stdout(record).strip()


def test_a_sigkilled_runner_leaves_a_dead_mount_that_recovery_detaches(
    workspace: Workspace, tmp_path: Path, container: BlobStore
) -> None:
    container.write_bytes("in/a.txt", b"a\n")
    container.write_bytes("in/untouched.txt", b"u\n")
    container.write_bytes("in/removed.txt", b"r\n")
    ready = tmp_path / "ready"
    command = (
        f"cat {M}/in/a.txt > {M}/in/copy.txt && echo new > {M}/new.txt && rm {M}/in/removed.txt && "
        f"touch {ready} && sleep 60"
    )
    record = run(workspace, tmp_path, container, command)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert time.monotonic() < deadline, "the job did not get going"
        time.sleep(0.05)
    runner = JobRecord.load(record.path)
    assert runner.runner_pid
    mountpoint = runner.work_dir / "azbai" / "mounts" / "m"
    assert blobfuse.mounts_under(runner.path) == [str(mountpoint)]
    os.kill(runner.runner_pid, signal.SIGKILL)
    while runner.runner_alive:
        assert time.monotonic() < deadline, "the runner did not die"
        time.sleep(0.05)
    with pytest.raises(OSError) as dead:
        os.listdir(mountpoint)  # the kernel aborted the connection with its server
    # ENOTCONN once the abort is complete; ECONNABORTED for a request that met the connection being torn down
    assert dead.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
    recovered = JobBook(workspace).get(runner.name)  # what `azbai job show` does
    assert recovered.state == "failed" and "died" in (recovered.message or "")
    assert recovered.stage_out == "done"
    assert not blobfuse.mounts_under(recovered.path)
    assert contents(container) == {
        "in/a.txt": b"a\n",
        "in/copy.txt": b"a\n",
        "in/untouched.txt": b"u\n",
        "new.txt": b"new\n",
    }
    assert sorted(os.listdir(mountpoint)) == [
        "in",
        "new.txt",
    ]  # the job's path shows what it fetched and wrote
    delete_job(recovered)
    assert not recovered.path.exists()


def test_job_delete_detaches_a_mount_left_behind(
    workspace: Workspace, tmp_path: Path, container: BlobStore
) -> None:
    """A runner killed between mounting and recording its stage-out leaves a mount nobody knows of: `job delete`
    (through recovery) detaches it rather than failing on ENOTCONN."""
    container.write_bytes("a.txt", b"a")
    record = run(workspace, tmp_path, container, "true", wait=True)
    stray = record.work_dir / "azbai" / "mounts" / "stray"
    mount = blobfuse.LazyMount(container, "", stray, tmp_path / "stray-cache", tmp_path / "stray.removed")
    mount.start()
    try:
        assert os.listdir(stray) == ["a.txt"]
        delete_job(JobBook(workspace).get(record.name))
        assert not record.path.exists() and not blobfuse.mounts_under(tmp_path)
    finally:
        mount.stop()


def test_the_mount_setting(
    workspace: Workspace, tmp_path: Path, container: BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    container.write_bytes("a.txt", b"a")
    container.write_bytes("b.txt", b"b")
    monkeypatch.setenv(BLOB_MOUNT_ENV, "mirror")
    record = run(workspace, tmp_path, container, f"cat {M}/a.txt", wait=True)
    assert stdout(record) == "a"
    assert sorted(os.listdir(record.work_dir / "azbai" / "mounts" / "m")) == ["a.txt", "b.txt"]  # all of it
    assert not (record.work_dir / "azbai" / "mount-cache").exists()
    monkeypatch.setenv(BLOB_MOUNT_ENV, "lazy")
    with pytest.raises(JobFailed):
        run(workspace, tmp_path, container, "true", wait=True, name="badmode")
    failed = JobBook(workspace).get("badmode")
    assert "AZBAI_BLOB_MOUNT='lazy' is not a blob mount mode: expected one of auto, fuse, mirror" in (
        failed.message or ""
    )


def test_a_mount_point_with_odd_characters_is_found_and_detached(
    tmp_path: Path, container: BlobStore
) -> None:
    """/proc/self/mountinfo escapes spaces and the like; a mount we made must still be found to be detached."""
    container.write_bytes("a.txt", b"a")
    point = tmp_path / "job dir\tx" / "m"
    mount = blobfuse.LazyMount(container, "", point, tmp_path / "cache", tmp_path / "removed")
    mount.start()
    try:
        assert blobfuse.mounts_under(tmp_path / "job dir\tx") == [str(point)]
        assert (point / "a.txt").read_bytes() == b"a"
    finally:
        mount.stop()
    assert not blobfuse.mounts_under(tmp_path)
    assert os.listdir(point) == []


def test_the_journal_ignores_a_torn_last_line(tmp_path: Path) -> None:
    journal = tmp_path / "removed"
    journal.write_text('"a/b.txt"\n"line\\nbreak"\n"tor')
    assert blobfuse.read_journal(journal) == {"a/b.txt", "line\nbreak"}
    assert blobfuse.read_journal(tmp_path / "absent") == set()
