"""One conformance suite for the Store interface, run against every implementation (BlobStore, ShareStore)."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from azbai.errors import StorageError
from azbai.local.stores import Entry, Store, open_store
from tests.conftest import TIMING_HEALTH_CHECKS

from .conftest import ACCOUNT

pytestmark = pytest.mark.azurite

EMPTY_MD5 = hashlib.md5(b"").hexdigest()
BAD_PATHS = ["", "/etc/passwd", "../x", "a/../../x", "a/..", "./a", "a/./b", "a//b", "a/", "C:/x", "a\0b"]


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_write_then_read_round_trip(store: Store) -> None:
    entry = store.write_bytes("hello.txt", b"hello, world\n")
    assert entry == Entry("hello.txt", 13, md5(b"hello, world\n"))
    assert store.read_bytes("hello.txt") == b"hello, world\n"
    assert store.info("hello.txt") == entry
    assert store.exists("hello.txt")
    assert store.root_exists()


def test_upload_then_download_round_trip(store: Store, tmp_path: Path) -> None:
    data = os.urandom(300_000)
    source = tmp_path / "in.bin"
    source.write_bytes(data)
    uploaded = store.upload_file(source, "dir/in.bin")
    assert uploaded == Entry("dir/in.bin", len(data), md5(data))
    got = store.download_file("dir/in.bin", tmp_path / "out" / "copy.bin")
    assert got == uploaded
    assert (tmp_path / "out" / "copy.bin").read_bytes() == data
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["copy.bin"]  # no temporary file left


def test_start_download_and_put_bytes_do_what_download_file_and_write_bytes_do(
    store: Store, tmp_path: Path
) -> None:
    from azbai.local.digests import Md5Batcher

    data = os.urandom(300_000)  # a size a transfer hashes in batches
    tmp_path = tmp_path / "local"
    tmp_path.mkdir()
    assert store.put_bytes("put.bin", data, md5(data)) == Entry("put.bin", len(data), md5(data))
    (tmp_path / "keep.bin").write_bytes(b"old")
    with Md5Batcher(wait=0.001) as digests:
        entry = store.start_download("put.bin", tmp_path / "keep.bin", digests).result(timeout=30)
        with pytest.raises(StorageError):
            store.start_download("missing.bin", tmp_path / "other.bin", digests).result(timeout=30)
    assert (
        entry
        == Entry("put.bin", len(data), md5(data))
        == store.download_file("put.bin", tmp_path / "again.bin")
    )
    assert (tmp_path / "keep.bin").read_bytes() == data == (tmp_path / "again.bin").read_bytes()
    assert not (tmp_path / "other.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.bin", "keep.bin"]  # no part file left


def test_a_failed_download_leaves_the_local_file_as_it_was(store: Store, tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_bytes(b"my own")
    with pytest.raises(StorageError):
        store.download_file("nothing/here.txt", tmp_path / "mine.txt")
    assert (tmp_path / "mine.txt").read_bytes() == b"my own"


def test_nested_paths(store: Store, tmp_path: Path) -> None:
    store.write_bytes("a/b/c/d.txt", b"deep")
    store.write_bytes("a/top.txt", b"top")
    assert [e.path for e in store.list()] == ["a/b/c/d.txt", "a/top.txt"]
    store.download_file("a/b/c/d.txt", tmp_path / "x" / "y" / "d.txt")
    assert (tmp_path / "x" / "y" / "d.txt").read_bytes() == b"deep"


def test_list_with_prefix(store: Store) -> None:
    for path in ["data/1.txt", "data/2.txt", "data2/x.txt", "other/y.txt"]:
        store.write_bytes(path, path.encode())
    assert [e.path for e in store.list("data/")] == ["data/1.txt", "data/2.txt"]
    assert [e.path for e in store.list("data")] == [
        "data/1.txt",
        "data/2.txt",
        "data2/x.txt",
    ]  # a string prefix
    assert [e.path for e in store.list("data/2")] == ["data/2.txt"]
    assert len(store.list()) == 4
    assert store.list("nothing-here/") == []


def test_list_reports_sizes_and_md5s(store: Store) -> None:
    contents = {f"f{i}.bin": os.urandom(i * 1000) for i in range(5)}
    for path, data in contents.items():
        store.write_bytes(path, data)
    assert store.list() == [Entry(p, len(d), md5(d)) for p, d in sorted(contents.items())]


def test_overwrite_replaces_content_and_md5(store: Store, tmp_path: Path) -> None:
    store.write_bytes("f.txt", b"first version")
    source = tmp_path / "f.txt"
    source.write_bytes(b"second")
    store.upload_file(source, "f.txt")
    assert store.read_bytes("f.txt") == b"second"
    assert store.list() == [Entry("f.txt", 6, md5(b"second"))]


def test_delete(store: Store) -> None:
    store.write_bytes("d/x.txt", b"x")
    store.write_bytes("keep.txt", b"k")
    store.delete("d/x.txt")
    assert not store.exists("d/x.txt")
    assert [e.path for e in store.list()] == ["keep.txt"]
    with pytest.raises(StorageError, match=r"d/x\.txt"):
        store.delete("d/x.txt")
    store.delete("d/x.txt", missing_ok=True)


def test_missing_files_are_storage_errors(store: Store, tmp_path: Path) -> None:
    store.write_bytes("present.txt", b"p")
    with pytest.raises(StorageError, match=r"absent\.txt"):
        store.read_bytes("absent.txt")
    with pytest.raises(StorageError, match=r"absent\.txt"):
        store.info("absent.txt")
    with pytest.raises(StorageError, match=r"absent\.txt"):
        store.download_file("absent.txt", tmp_path / "out" / "absent.txt")
    assert not store.exists("absent.txt")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("bad", BAD_PATHS)
def test_paths_cannot_escape(store: Store, tmp_path: Path, bad: str) -> None:
    local = tmp_path / "f.txt"
    local.write_bytes(b"x")
    calls = [
        lambda: store.write_bytes(bad, b"x"),
        lambda: store.read_bytes(bad),
        lambda: store.upload_file(local, bad),
        lambda: store.download_file(bad, tmp_path / "out.txt"),
        lambda: store.exists(bad),
        lambda: store.info(bad),
        lambda: store.delete(bad),
    ]
    for call in calls:
        with pytest.raises(StorageError, match="path"):
            call()
    assert not (tmp_path / "out.txt").exists()


@pytest.mark.parametrize("bad", ["/", "../", "a/../b", "/abs"])
def test_list_prefix_cannot_escape(store: Store, bad: str) -> None:
    with pytest.raises(StorageError, match="path"):
        store.list(bad)


def test_empty_file(store: Store, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.touch()
    assert store.upload_file(empty, "empty") == Entry("empty", 0, EMPTY_MD5)
    assert store.list() == [Entry("empty", 0, EMPTY_MD5)]
    store.download_file("empty", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == b""
    assert store.read_bytes("empty") == b""


def test_binary_content(store: Store, tmp_path: Path) -> None:
    data = bytes(range(256)) * 64 + b"\r\n\0\x1a" + random.Random(7).randbytes(70_000)
    store.write_bytes("bin/all-bytes", data)
    assert store.read_bytes("bin/all-bytes") == data
    store.download_file("bin/all-bytes", tmp_path / "b")
    assert (tmp_path / "b").read_bytes() == data


def test_download_replaces_an_existing_file(store: Store, tmp_path: Path) -> None:
    target = tmp_path / "t.txt"
    target.write_bytes(b"old local content that is longer")
    store.write_bytes("t.txt", b"new")
    store.download_file("t.txt", target)
    assert target.read_bytes() == b"new"


def test_url_for_names_the_store(store: Store) -> None:
    url = store.url_for("dir/a file.txt")
    if store.kind == "blob":
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith(f"/{ACCOUNT}/{store.name}/dir/a%20file.txt")
    else:
        assert url.startswith("file:///")
        assert url.endswith(f"/shares/{ACCOUNT}/{store.name}/dir/a%20file.txt")
    assert store.url_for() == url.rsplit("/dir/", 1)[0]


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, *TIMING_HEALTH_CHECKS],
)
@given(
    data=st.binary(max_size=5000),
    name=st.from_regex(r"[a-z0-9_-]{1,12}(/[a-z0-9._-]{1,12}){0,2}", fullmatch=True),
)
def test_any_bytes_round_trip(store: Store, data: bytes, name: str) -> None:
    if any(part in (".", "..") for part in name.split("/")):
        return
    entry = store.write_bytes(name, data)
    assert entry == Entry(name, len(data), md5(data))
    assert store.read_bytes(name) == data
    store.delete(name)


def test_open_store_needs_exactly_one_of_container_and_share(tmp_path: Path) -> None:
    from azbai.local.workspace import Workspace

    workspace = Workspace(tmp_path)
    with pytest.raises(StorageError, match="exactly one"):
        open_store(workspace, ACCOUNT)
    with pytest.raises(StorageError, match="exactly one"):
        open_store(workspace, ACCOUNT, container="abc", share="abc")


@pytest.mark.parametrize("name", ["ab", "Abc", "a--b", "-abc", "abc-", "a_b", "x" * 64])
def test_container_and_share_names_are_validated(tmp_path: Path, name: str) -> None:
    from azbai.local.workspace import Workspace

    with pytest.raises(StorageError, match="invalid container name"):
        open_store(Workspace(tmp_path), ACCOUNT, container=name)
    with pytest.raises(StorageError, match="invalid share name"):
        open_store(Workspace(tmp_path), ACCOUNT, share=name)


@pytest.mark.parametrize("account", ["ab", "UPPER", "has-hyphen", "x" * 25])
def test_account_names_are_validated(tmp_path: Path, account: str) -> None:
    from azbai.local.workspace import Workspace

    with pytest.raises(StorageError, match="invalid storage account name"):
        open_store(Workspace(tmp_path), account, share="abc")
