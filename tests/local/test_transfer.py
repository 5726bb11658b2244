"""Parallel, verified, incremental transfers between a local tree and each kind of store."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from azbai.errors import StorageError, TransferError
from azbai.local import transfer
from azbai.local.azurite import Emulator
from azbai.local.stores import BlobStore, PartFile, ShareStore, Store
from azbai.local.transfer import download, md5_cache_path, upload

pytestmark = pytest.mark.azurite


@pytest.fixture(autouse=True, params=["unnamed", "named"])
def part_files(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test with both kinds of part file: unnamed until the commit (O_TMPFILE) and named (the fallback)."""
    if request.param == "unnamed" and not PartFile._anonymous_ok:
        pytest.skip("no O_TMPFILE here")
    monkeypatch.setattr(PartFile, "_anonymous_ok", request.param == "unnamed")
    return str(request.param)


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "readme.txt": b"hello\n",
        "empty.dat": b"",
        "data/train/0001.bin": os.urandom(1 << 20),
        "data/train/0002.bin": os.urandom(12_345),
        "data/test/0001.bin": os.urandom(70_000),
        "deep/a/b/c/d/e.txt": b"deep",
        "with space/file name.txt": b"spaces",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and not p.name.endswith(".part")
    }


def stray_parts(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.part")]


def replace_under_a_wrong_md5(store: BlobStore, path: str, data: bytes) -> None:
    """The blob changes under a wrong Content-MD5: what arrives cannot verify."""
    from azure.storage.blob import ContentSettings

    blob = store._client.get_blob_client(path)
    blob.upload_blob(data, overwrite=True)
    blob.set_http_headers(ContentSettings(content_md5=bytearray(hashlib.md5(b"other bytes").digest())))


def count_downloads(store: BlobStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The path of every download attempt, handed over or not, in the order they start."""
    attempts: list[str] = []
    real = store._download

    def counting(path: str, local: Path, digests):  # type: ignore[no-untyped-def]
        attempts.append(path)
        return real(path, local, digests)

    monkeypatch.setattr(store, "_download", counting)
    return attempts


def test_directory_round_trip(store: Store, tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src")
    up = upload(tmp_path / "src", store, "inputs", workers=4)
    assert (up.files_transferred, up.files_skipped) == (len(files), 0)
    assert up.bytes_transferred == sum(len(d) for d in files.values())
    assert sorted(e.path for e in store.list()) == sorted(f"inputs/{rel}" for rel in files)

    down = download(store, "inputs", tmp_path / "dst", workers=4)
    assert down.files_transferred == len(files)
    assert read_tree(tmp_path / "dst") == files
    assert not md5_cache_path(tmp_path / "dst").exists()  # only incremental mode keeps a cache


def test_single_file_upload_and_prefix_download(store: Store, tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"weights")
    upload(tmp_path / "model.onnx", store, "models/v1/")
    assert [e.path for e in store.list()] == ["models/v1/model.onnx"]
    download(store, "models/v1/model.onnx", tmp_path / "out")
    assert (tmp_path / "out" / "model.onnx").read_bytes() == b"weights"
    store.write_bytes("models/v10/other.onnx", b"not under models/v1")
    report = download(store, "models/v1", tmp_path / "out2")
    assert read_tree(tmp_path / "out2") == {"model.onnx": b"weights"}
    assert report.files_transferred == 1


def test_incremental_second_run_transfers_nothing(store: Store, tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src")
    upload(tmp_path / "src", store, "", incremental=True)
    again = upload(tmp_path / "src", store, "", incremental=True)
    assert (again.files_transferred, again.files_skipped, again.bytes_transferred) == (0, len(files), 0)

    first = download(store, "", tmp_path / "dst", incremental=True)
    assert first.files_transferred == len(files)
    second = download(store, "", tmp_path / "dst", incremental=True)
    assert (second.files_transferred, second.files_skipped) == (0, len(files))
    cache = json.loads(md5_cache_path(tmp_path / "dst").read_text())
    assert sorted(cache["files"]) == sorted(files)


def test_incremental_without_the_cache_hashes_and_still_skips(store: Store, tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src")
    upload(tmp_path / "src", store, "")
    download(store, "", tmp_path / "dst", incremental=True)
    md5_cache_path(tmp_path / "dst").unlink()
    again = download(store, "", tmp_path / "dst", incremental=True)
    assert (again.files_transferred, again.files_skipped) == (0, len(files))


def test_a_changed_file_is_the_only_one_transferred(store: Store, tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    upload(tmp_path / "src", store, "", incremental=True)
    download(store, "", tmp_path / "dst", incremental=True)

    changed = tmp_path / "src" / "data" / "train" / "0002.bin"
    changed.write_bytes(os.urandom(12_345))  # same size, new content
    up = upload(tmp_path / "src", store, "", incremental=True)
    assert up.files_transferred == 1
    assert store.read_bytes("data/train/0002.bin") == changed.read_bytes()

    down = download(store, "", tmp_path / "dst", incremental=True)
    assert (down.files_transferred, down.bytes_transferred) == (1, 12_345)
    assert read_tree(tmp_path / "dst") == read_tree(tmp_path / "src")

    # A local edit is noticed too (size changed, or mtime changed and the MD5 differs).
    edited = tmp_path / "dst" / "readme.txt"
    edited.write_bytes(b"edited locally\n")
    down = download(store, "", tmp_path / "dst", incremental=True)
    assert down.files_transferred == 1
    assert edited.read_bytes() == b"hello\n"


def test_progress_reports_every_file(store: Store, tmp_path: Path) -> None:
    files = make_tree(tmp_path / "src")
    calls: list[tuple[int, int, int, int]] = []
    upload(tmp_path / "src", store, "", progress=lambda *a: calls.append(a))
    total = sum(len(d) for d in files.values())
    assert calls[0] == (0, total, 0, len(files))
    assert calls[-1] == (total, total, len(files), len(files))
    assert [c[2] for c in calls] == list(range(len(files) + 1))
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(calls))


def test_every_file_is_uploaded_whatever_its_name(store: Store, tmp_path: Path) -> None:
    # issue 11 item 2: a file named .azbai-* is user data too; azbai's own cache lives beside the tree
    make_tree(tmp_path / "src")
    (tmp_path / "src" / ".azbai-notes.txt").write_bytes(b"mine")
    (tmp_path / "src" / "sub").mkdir(exist_ok=True)
    (tmp_path / "src" / "sub" / ".azbai-x").write_bytes(b"also mine")
    upload(tmp_path / "src", store, "")
    assert store.read_bytes(".azbai-notes.txt") == b"mine"
    download(store, "", tmp_path / "dst", incremental=True)
    assert (tmp_path / "dst" / "sub" / ".azbai-x").read_bytes() == b"also mine"
    assert md5_cache_path(tmp_path / "dst").is_file()
    assert not list((tmp_path / "dst").glob("*md5cache*"))
    report = upload(tmp_path / "dst", store, "copy", incremental=True)
    assert report.files == len(read_tree(tmp_path / "src"))
    assert {e.path for e in store.list("copy/")} == {"copy/" + rel for rel in read_tree(tmp_path / "src")}


def test_missing_source_is_an_error(store: Store, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no such file"):
        upload(tmp_path / "nope", store, "")


def test_a_file_and_a_folder_of_the_same_name_cannot_be_downloaded(
    blob_store: BlobStore, tmp_path: Path
) -> None:
    blob_store.write_bytes("a", b"file")
    blob_store.write_bytes("a/b", b"file in folder")
    with pytest.raises(TransferError, match="both a file and a folder"):
        download(blob_store, "", tmp_path / "dst")


def test_corrupted_blob_download_fails_and_leaves_no_partial_file(
    blob_store: BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(tmp_path / "src")
    upload(tmp_path / "src", blob_store, "")
    download(blob_store, "", tmp_path / "dst", incremental=True)
    before = read_tree(tmp_path / "dst")

    replace_under_a_wrong_md5(blob_store, "data/train/0001.bin", os.urandom(1 << 20))
    attempts = count_downloads(blob_store, monkeypatch)
    with pytest.raises(TransferError, match=r"data/train/0001\.bin.*Content-MD5") as info:
        download(blob_store, "", tmp_path / "dst", incremental=True, workers=2)
    assert attempts == ["data/train/0001.bin"] * 2  # one retry, then the error
    assert "left as it was" in str(info.value)
    assert read_tree(tmp_path / "dst") == before  # the old file is untouched, nothing half-written
    assert stray_parts(tmp_path / "dst") == []

    # Into an empty folder: the file simply does not appear.
    with pytest.raises(TransferError):
        download(blob_store, "data/train", tmp_path / "fresh")
    assert not (tmp_path / "fresh" / "0001.bin").exists()
    assert stray_parts(tmp_path / "fresh") == []


def test_corruption_in_the_stream_is_caught(
    blob_store: BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azbai.local import stores

    blob_store.write_bytes("x.bin", os.urandom(50_000))
    real_write = stores._HashingWriter.write

    def flip_a_bit(self: stores._HashingWriter, data: bytes) -> int:
        data = bytes(data)
        return real_write(self, bytes([data[0] ^ 1]) + data[1:])

    monkeypatch.setattr(stores._HashingWriter, "write", flip_a_bit)
    with pytest.raises(TransferError, match=r"x\.bin"):
        download(blob_store, "", tmp_path / "dst")
    assert not (tmp_path / "dst" / "x.bin").exists()
    assert stray_parts(tmp_path) == []


def test_stale_share_index_is_caught_and_the_retry_copies_the_current_bytes(
    share_store: ShareStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    share_store.write_bytes("w.bin", b"A" * 1000)
    share_store.flush()
    # Same size and mtime as indexed, different bytes: only the MD5 can tell. The share itself is the truth,
    # so the stale index entry is dropped and the retry copies what the file holds now.
    target = share_store.root / "w.bin"
    st = target.stat()
    target.write_bytes(b"B" * 1000)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    download(share_store, "", tmp_path / "dst")
    assert "recorded MD5" in caplog.text
    assert (tmp_path / "dst" / "w.bin").read_bytes() == b"B" * 1000
    assert share_store.info("w.bin").md5 == hashlib.md5(b"B" * 1000).hexdigest()


def test_a_share_file_changing_during_the_copy_fails(
    share_store: ShareStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azbai.local import stores

    share_store.write_bytes("busy.log", b"line\n" * 100)
    monkeypatch.setattr(stores, "_unchanged", lambda *args: False)
    with pytest.raises(TransferError, match=r"busy\.log changed while it was being copied"):
        download(share_store, "", tmp_path / "dst")
    assert not (tmp_path / "dst" / "busy.log").exists()
    assert stray_parts(tmp_path / "dst") == []


def test_large_blob_round_trip_uses_blocks_and_ranges(blob_store: BlobStore, tmp_path: Path) -> None:
    # Over the 8 MB single-request upload and the SDK's 32 MB first GET: blocks up, parallel ranges down.
    data = os.urandom(40 << 20)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "big.bin").write_bytes(data)
    upload(tmp_path / "src", blob_store, "")
    assert blob_store.info("big.bin").md5 == hashlib.md5(data).hexdigest()
    download(blob_store, "", tmp_path / "dst")
    assert (tmp_path / "dst" / "big.bin").read_bytes() == data


def test_retry_then_success_counts_once(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.write_bytes("flaky.txt", b"ok")
    real = store.download_file
    failures = iter([True])

    def flaky(path: str, local: str | os.PathLike[str]):  # type: ignore[no-untyped-def]
        if next(failures, False):
            raise TransferError("simulated")
        return real(path, local)

    monkeypatch.setattr(store, "download_file", flaky)
    report = transfer.download(store, "", tmp_path / "dst")
    assert report.files_transferred == 1
    assert (tmp_path / "dst" / "flaky.txt").read_bytes() == b"ok"


def test_many_files_into_new_folders_in_parallel(blob_store: BlobStore, tmp_path: Path) -> None:
    # Threads race to create the same missing folders (a part file makes its folder only when it is missing),
    # and the listing comes in pages of 7: every file arrives, nothing else.
    files = {
        f"{top}/{sub}/{i:03d}.bin": os.urandom(100 + i) for top in "ab" for sub in "xyz" for i in range(12)
    }
    for rel, data in files.items():
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_bytes(data)
    upload(tmp_path / "src", blob_store, "")
    blob_store.list_page_size = 7
    report = download(blob_store, "", tmp_path / "dst", workers=16)
    assert report.files_transferred == len(files)
    assert read_tree(tmp_path / "dst") == files
    assert stray_parts(tmp_path / "dst") == []


def test_a_download_cannot_write_where_a_file_stands_in_for_its_folder(
    blob_store: BlobStore, tmp_path: Path
) -> None:
    blob_store.write_bytes("d/inner.txt", b"x")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "d").write_bytes(b"a file, not a folder")
    with pytest.raises(TransferError, match=r"cannot write .*inner\.txt"):
        download(blob_store, "", tmp_path / "dst")
    assert (tmp_path / "dst" / "d").read_bytes() == b"a file, not a folder"


def test_emulator_killed_mid_download_leaves_only_whole_files_and_a_retry_completes(
    fresh_emulator: Emulator, tmp_path: Path
) -> None:
    import signal

    files = {f"frames/{i:04d}.png": os.urandom(64 << 10) for i in range(60)}
    for rel, data in files.items():
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_bytes(data)
    fresh_emulator.ensure()
    upload(tmp_path / "src", BlobStore.open(fresh_emulator.workspace, "devstoreaccount1", "frames"), "")
    fresh_emulator.stop()  # a graceful stop persists the metadata that a SIGKILL would lose
    state = fresh_emulator.ensure()
    store = BlobStore.open(fresh_emulator.workspace, "devstoreaccount1", "frames")

    def kill_after_five(done_bytes: int, total_bytes: int, done_files: int, total_files: int) -> None:
        if done_files == 5:
            os.kill(state.pid, signal.SIGKILL)  # the emulator this test started, by its PID

    with pytest.raises(StorageError) as info:
        download(store, "", tmp_path / "dst", progress=kill_after_five, workers=4)
    assert "AccountKey" not in str(info.value) and "sig=" not in str(info.value)
    arrived = read_tree(tmp_path / "dst")
    assert 5 <= len(arrived) < len(files)
    assert all(files[rel] == data for rel, data in arrived.items())  # whole files or none, under final names
    assert stray_parts(tmp_path / "dst") == []

    fresh_emulator.ensure()
    store = BlobStore.open(fresh_emulator.workspace, "devstoreaccount1", "frames")
    report = download(store, "", tmp_path / "dst", incremental=True)
    assert read_tree(tmp_path / "dst") == files
    # What arrived whole is recognised by its MD5 (no cache: the first run was not incremental) and kept.
    assert (report.files_skipped, report.files_transferred) == (len(arrived), len(files) - len(arrived))


def test_parallel_downloads_keep_the_umask_and_give_files_its_mode(store: Store, tmp_path: Path) -> None:
    # Each downloaded file gets the mode a plain open() would: 0o666 less the umask in force now, not the one the
    # process had at its first download (the mode used to be computed once and cached), and finding it must not
    # change the umask under the other transfer threads.
    source = tmp_path / "src"
    source.mkdir()
    for i in range(300):
        (source / f"f{i:03d}").write_bytes(b"x")
    upload(source, store, "modes")
    download(store, "modes/f000", tmp_path / "first")  # a download under the usual umask comes first
    interval = sys.getswitchinterval()
    previous = os.umask(0o027)
    try:
        sys.setswitchinterval(1e-6)  # threads switch between any two bytecodes, as often as they can
        download(store, "modes", tmp_path / "dst")
        assert os.umask(0o027) == 0o027
    finally:
        sys.setswitchinterval(interval)
        os.umask(previous)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "dst").iterdir()}
    assert modes == {0o640}


def test_a_process_killed_mid_write_leaves_no_part_file(tmp_path: Path, part_files: str) -> None:
    if part_files == "named":
        pytest.skip("a named part file outlives a SIGKILL; only the unnamed kind cannot")
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from azbai.local.stores import PartFile\n"
        "with PartFile(Path(sys.argv[1])) as part:\n"
        "    part.file.write(b'half' * 1000)\n"
        "    part.file.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "target")], capture_output=True)
    assert result.returncode == -9, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_part_files_replace_a_target_and_work_in_a_forked_child(tmp_path: Path, part_files: str) -> None:
    (tmp_path / "target").write_bytes(b"old")
    with PartFile(tmp_path / "target") as part:
        part.file.write(b"new")
        part.commit()
    assert (tmp_path / "target").read_bytes() == b"new"
    pid = os.fork()
    if pid == 0:  # the child: its /proc/self is not its parent's
        code = 1
        try:
            with PartFile(tmp_path / "child") as part:
                part.file.write(b"from the child")
                part.commit()
            code = 0 if (tmp_path / "child").read_bytes() == b"from the child" else 2
        finally:
            os._exit(code)  # whatever happened: the child never returns into pytest
    assert os.waitpid(pid, 0)[1] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["child", "target"]


def test_where_proc_refuses_the_link_named_part_files_take_over(
    store: Store, tmp_path: Path, part_files: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if part_files == "named":
        pytest.skip("only the unnamed kind links through /proc")
    from azbai.local import stores

    def refused(fd: int, target: Path) -> None:
        raise PermissionError(1, "Operation not permitted", str(target))

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_bytes(b"a")
    upload(tmp_path / "src", store, "p")
    monkeypatch.setattr(stores, "_link_open_file", refused)
    report = download(
        store, "p", tmp_path / "dst"
    )  # the first file fails, and its one retry gets a named one
    assert report.files_transferred == 1 and (tmp_path / "dst" / "a.txt").read_bytes() == b"a"
    assert PartFile._anonymous_ok is False and stray_parts(tmp_path / "dst") == []


# -- MD5s in batches (azbai.local.md5x): downloads hand their files over, uploads are read and hashed ahead


@pytest.fixture
def batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every MD5 pass of the batcher and the read-ahead (they need the SIMD lanes)."""
    from azbai.local import digests

    if not transfer.LANES:
        pytest.skip("azbai.local.md5x has no SIMD lanes here: transfers hash with hashlib")
    sizes: list[int] = []
    real = digests.md5_hex_many

    def counting(buffers):  # type: ignore[no-untyped-def]
        sizes.append(len(buffers))
        return real(buffers)

    monkeypatch.setattr(digests, "md5_hex_many", counting)
    monkeypatch.setattr(transfer, "md5_hex_many", counting)
    return sizes


def batchable_tree(root: Path, count: int = 40) -> dict[str, bytes]:
    """Files of every size a transfer treats apart: hashed alone (small), in batches, in blocks (> 8 MB)."""
    rng = random.Random(count)
    files = {f"batch/{i:03d}.bin": os.urandom(rng.randrange(256 << 10, 1 << 20)) for i in range(count)}
    files.update({"small/a.txt": b"a" * 100, "big/whole.bin": os.urandom((8 << 20) + 5)})
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_batched_md5s_upload_and_download_every_file_verified(
    blob_store: BlobStore, tmp_path: Path, batch_sizes: list[int]
) -> None:
    files = batchable_tree(tmp_path / "src")
    upload(tmp_path / "src", blob_store, "")
    uploaded = list(batch_sizes)
    assert sum(uploaded) == 40 and max(uploaded) > 1  # the batchable files, several to a pass
    for rel, data in files.items():
        assert blob_store.info(rel).md5 == hashlib.md5(data).hexdigest()

    batch_sizes.clear()
    report = download(blob_store, "", tmp_path / "dst", workers=8)
    assert sum(batch_sizes) == 40 and max(batch_sizes) > 1
    assert report.files_transferred == len(files)
    assert read_tree(tmp_path / "dst") == files
    assert stray_parts(tmp_path / "dst") == []
    assert not [t for t in threading.enumerate() if t.name == "azbai-md5"]  # the batcher's thread is gone


def test_a_batched_download_that_does_not_verify_is_retried_then_fails_cleanly(
    blob_store: BlobStore, tmp_path: Path, batch_sizes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    files = batchable_tree(tmp_path / "src", count=12)
    upload(tmp_path / "src", blob_store, "")
    download(blob_store, "", tmp_path / "dst", incremental=True)
    before = read_tree(tmp_path / "dst")
    assert before == files

    victim = "batch/005.bin"
    replace_under_a_wrong_md5(blob_store, victim, os.urandom(len(files[victim])))
    for rel in files:  # every other file changes too (rightly), so each is downloaded again, in batches
        if rel != victim:
            files[rel] = files[rel][::-1]
            blob_store.write_bytes(rel, files[rel])

    attempts = count_downloads(blob_store, monkeypatch)
    batch_sizes.clear()
    with pytest.raises(TransferError, match=r"batch/005\.bin.*Content-MD5") as info:
        download(blob_store, "", tmp_path / "dst", incremental=True, workers=4)
    assert attempts.count(victim) == 2  # handed over once, then one retry of its own
    assert "left as it was" in str(info.value)
    after = read_tree(tmp_path / "dst")
    assert after[victim] == before[victim]  # the old file is untouched
    assert all(after[rel] in (before[rel], files[rel]) for rel in files)  # each file old or new, never mixed
    assert stray_parts(tmp_path / "dst") == []
    assert not [t for t in threading.enumerate() if t.name == "azbai-md5"]


def test_a_failing_md5_pass_fails_the_download_and_leaves_whole_files_only(
    blob_store: BlobStore, tmp_path: Path, batch_sizes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from azbai.local import digests

    files = batchable_tree(tmp_path / "src", count=20)
    upload(tmp_path / "src", blob_store, "")

    def broken(buffers):  # type: ignore[no-untyped-def]
        raise MemoryError("no room for the batch")

    monkeypatch.setattr(digests, "md5_hex_many", broken)
    with pytest.raises(MemoryError):
        download(blob_store, "", tmp_path / "dst", workers=4)
    arrived = read_tree(tmp_path / "dst")
    assert all(files[rel] == data for rel, data in arrived.items())
    assert not any(rel.startswith("batch/") for rel in arrived)  # none of them could be verified
    assert stray_parts(tmp_path / "dst") == []
    assert not [t for t in threading.enumerate() if t.name == "azbai-md5"]


def test_a_file_the_read_ahead_cannot_read_is_named(
    blob_store: BlobStore, tmp_path: Path, batch_sizes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    batchable_tree(tmp_path / "src", count=10)
    unreadable = tmp_path / "src" / "batch" / "003.bin"
    real = open

    def refusing(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        if Path(file) == unreadable:
            raise PermissionError(13, "Permission denied")
        return real(file, *args, **kwargs)

    # the read-ahead's own open (root may read any file, so a chmod would not do)
    monkeypatch.setattr(transfer, "open", refusing, raising=False)
    with pytest.raises(TransferError, match=r"cannot read .*batch/003\.bin: Permission denied"):
        upload(tmp_path / "src", blob_store, "")
    assert not [t for t in threading.enumerate() if t.name == "azbai-read-ahead"]


def test_the_read_ahead_reuses_its_buffers_and_sends_each_file_its_own_bytes(
    blob_store: BlobStore, tmp_path: Path, batch_sizes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    import resource

    handed: list[list[bytearray]] = []  # the buffers themselves: kept alive, no two of them share an id
    real_get = transfer._BUFFERS.get

    def get(size: int) -> bytearray:
        buffer = real_get(size)
        handed[-1].append(buffer)
        return buffer

    monkeypatch.setattr(transfer._BUFFERS, "get", get)
    faults = []
    # files a little smaller each round: the same buffers serve
    for round_, shrink in enumerate((0, 3, 1000)):
        source = tmp_path / f"src{round_}"
        source.mkdir()
        files = {f"f{i:02d}.bin": os.urandom((1 << 20) - shrink - i) for i in range(30)}
        for name, data in files.items():
            (source / name).write_bytes(data)
        handed.append([])
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        upload(source, blob_store, f"r{round_}")
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        for name, data in files.items():  # no byte of an earlier round's file in a buffer it reuses
            assert blob_store.read_bytes(f"r{round_}/{name}") == data
    assert len(handed[1]) == len(handed[2]) == 30
    # Every file is read into a kept buffer where one is free: a new one is made only while all of them are in
    # flight, so three rounds of 30 files never need more than 30 (90 without reuse). Not "the later rounds use only
    # the first round's": how many files are in flight at once depends on how fast the workers send them.
    distinct = {id(buffer) for buffers in handed for buffer in buffers}
    assert len(distinct) <= 30, [len({id(buffer) for buffer in buffers}) for buffers in handed]
    # Fresh memory for each file faults a page per 4 KiB (30 MB: ~7,700 faults); kept buffers fault ~none.
    assert max(faults[1:]) < 2500, faults


def test_a_file_that_changes_size_after_it_was_listed_is_read_as_it_is_now(tmp_path: Path) -> None:
    grown, shrunk = tmp_path / "grown.bin", tmp_path / "shrunk.bin"
    grown.write_bytes(os.urandom(400_000))
    shrunk.write_bytes(os.urandom(300_000))
    ahead = transfer._ReadAhead({grown: 300_000, shrunk: 400_000})  # the sizes the upload listed
    try:
        for path in (grown, shrunk):
            read = ahead.take(path)
            assert read is not None
            data, digest = read
            assert bytes(data) == path.read_bytes() and digest == hashlib.md5(path.read_bytes()).hexdigest()
            ahead.done(data)
    finally:
        ahead.close()


def test_an_incremental_upload_skips_what_the_read_ahead_finds_unchanged(
    blob_store: BlobStore, tmp_path: Path, batch_sizes: list[int]
) -> None:
    files = batchable_tree(tmp_path / "src", count=10)
    upload(tmp_path / "src", blob_store, "", incremental=True)
    changed = tmp_path / "src" / "batch" / "007.bin"
    changed.write_bytes(os.urandom(300_000))
    report = upload(tmp_path / "src", blob_store, "", incremental=True)
    assert (report.files_transferred, report.files_skipped) == (1, len(files) - 1)
    assert blob_store.read_bytes("batch/007.bin") == changed.read_bytes()


def test_a_failing_upload_does_not_leave_workers_waiting_on_the_read_ahead(
    blob_store: BlobStore, tmp_path: Path, batch_sizes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A window of 1 MB: the read-ahead waits for taken files while the first upload fails and the jobs behind it
    # are cancelled (they never take their bytes); a running worker waiting for a later file must not hang.
    batchable_tree(tmp_path / "src", count=30)
    monkeypatch.setattr(transfer._ReadAhead.__init__, "__defaults__", (1 << 20,))
    real = blob_store.put_bytes

    def failing(path: str, data: bytes, md5: str):  # type: ignore[no-untyped-def]
        if path == "batch/000.bin":
            raise StorageError("simulated: no room in the container")
        return real(path, data, md5)

    monkeypatch.setattr(blob_store, "put_bytes", failing)
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            upload(tmp_path / "src", blob_store, "", workers=3)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the upload hung"
    assert isinstance(outcome[0], StorageError) and "no room" in str(outcome[0])
    assert not [t for t in threading.enumerate() if t.name == "azbai-read-ahead"]
