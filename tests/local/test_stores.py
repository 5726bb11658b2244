"""Behaviour particular to one store: what the conformance suite cannot say for both."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from azbai.errors import StorageError, TransferError
from azbai.local.stores import BlobStore, ShareStore

pytestmark = pytest.mark.azurite


def test_share_index_lives_beside_the_share_and_follows_direct_writes(share_store: ShareStore) -> None:
    share_store.write_bytes("model/weights.bin", b"v1")
    share_store.flush()
    index = share_store.root.parent / f".{share_store.name}.md5.json"
    assert index.is_file()
    assert sorted(p.name for p in share_store.root.rglob("*")) == ["model", "weights.bin"]

    # A job writes into the share directly, as it would through its mount.
    (share_store.root / "model" / "weights.bin").write_bytes(b"version two")
    (share_store.root / "logs").mkdir()
    (share_store.root / "logs" / "out.txt").write_bytes(b"log")
    entries = {e.path: e for e in share_store.list()}
    assert entries["model/weights.bin"].md5 == hashlib.md5(b"version two").hexdigest()
    assert entries["logs/out.txt"].size == 3


def test_share_links_that_leave_the_share_are_refused(share_store: ShareStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("no")
    share_store.write_bytes("inside.txt", b"yes")
    os.symlink(outside, share_store.root / "escape")
    os.symlink(outside / "secret.txt", share_store.root / "secret-link.txt")
    with pytest.raises(StorageError, match="outside share"):
        share_store.read_bytes("escape/secret.txt")
    with pytest.raises(StorageError, match="outside share"):
        share_store.write_bytes("escape/new.txt", b"x")
    assert not (outside / "new.txt").exists()
    assert [e.path for e in share_store.list()] == ["inside.txt"]


def test_share_delete_removes_emptied_folders(share_store: ShareStore) -> None:
    share_store.write_bytes("a/b/c.txt", b"c")
    share_store.write_bytes("a/keep.txt", b"k")
    share_store.delete("a/b/c.txt")
    assert not (share_store.root / "a" / "b").exists()
    assert (share_store.root / "a" / "keep.txt").exists()


def test_blob_container_is_created_on_demand_and_missing_ones_are_named(blob_store: BlobStore) -> None:
    assert not blob_store.root_exists()
    with pytest.raises(StorageError, match=f"container '{blob_store.name}' does not exist"):
        blob_store.list()
    blob_store.write_bytes("x.txt", b"x")
    assert blob_store.root_exists()


def test_blob_upload_sends_the_md5_and_the_emulator_checks_it(blob_store: BlobStore, tmp_path: Path) -> None:
    from azure.core.exceptions import HttpResponseError
    from azure.storage.blob import ContentSettings

    blob_store.write_bytes("seed.txt", b"creates the container")
    blob = blob_store._client.get_blob_client("wrong.txt")
    with pytest.raises(HttpResponseError) as info:
        blob.upload_blob(b"payload", content_settings=ContentSettings(content_md5=bytearray(16)))
    assert info.value.error_code == "Md5Mismatch"
    (tmp_path / "f").write_bytes(b"payload")
    entry = blob_store.upload_file(tmp_path / "f", "right.txt")
    props = blob_store._client.get_blob_client("right.txt").get_blob_properties()
    assert bytes(props.content_settings.content_md5).hex() == entry.md5 == hashlib.md5(b"payload").hexdigest()


def test_service_errors_are_told_by_their_code(blob_store: BlobStore) -> None:
    # The SDK's error codes are an enum whose str() is its own name ("StorageErrorCode.MD5_MISMATCH"): azbai reads
    # its value, so a missing container is named as such even for a blob's path, and a refused MD5 is a broken
    # transfer (retried once by a transfer), not an unexplained failure.
    with pytest.raises(StorageError, match=f"container '{blob_store.name}' does not exist") as missing:
        blob_store.read_bytes("some/blob.bin")
    assert "StorageErrorCode" not in str(missing.value)
    blob_store.write_bytes("seed.txt", b"creates the container")
    with pytest.raises(TransferError, match="received bytes whose MD5 differs") as refused:
        blob_store.put_bytes("x.bin", b"payload", hashlib.md5(b"other").hexdigest())
    assert "StorageErrorCode" not in str(refused.value)
    assert not blob_store.exists("x.bin")


def test_whole_blobs_go_in_one_request_each_and_store_what_the_sdk_would(
    blob_store: BlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.storage.blob import BlobClient

    from azbai.local.stores import SMALL_UPLOAD

    blob_store.write_bytes("seed.txt", b"the container")  # a missing container is the SDK call's to create
    data = {"a/one.bin": os.urandom(1 << 20), "a/small.txt": b"twenty bytes of text", "a/empty": b""}

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a whole blob went through the SDK's convenience call")

    with monkeypatch.context() as patched:
        patched.setattr(BlobClient, "upload_blob", refuse)
        patched.setattr(BlobClient, "download_blob", refuse)
        for path, content in data.items():
            blob_store.write_bytes(path, content)
        for path, content in data.items():
            got = blob_store.download_file(path, tmp_path / path)
            assert (tmp_path / path).read_bytes() == content
            assert got.md5 == hashlib.md5(content).hexdigest()
    for path, content in data.items():  # the blob's properties as upload_blob sets them
        props = blob_store._client.get_blob_client(path).get_blob_properties()
        assert props.blob_type == "BlockBlob" and props.size == len(content)
        assert props.content_settings.content_type == "application/octet-stream"
        assert bytes(props.content_settings.content_md5) == hashlib.md5(content).digest()

    # over SMALL_UPLOAD, and for an answer other than success, the SDK's own calls take over
    big = os.urandom(SMALL_UPLOAD + 1)
    blob_store.write_bytes("big.bin", big)
    blob_store.download_file("big.bin", tmp_path / "big.bin")
    assert (tmp_path / "big.bin").read_bytes() == big
    with pytest.raises(StorageError, match="no such blob"):
        blob_store.download_file("a/missing.bin", tmp_path / "missing.bin")
    assert not (tmp_path / "missing.bin").exists()


def test_blob_store_stays_usable_after_close(blob_store: BlobStore) -> None:
    blob_store.write_bytes("before.txt", b"1")
    blob_store.close()
    assert blob_store.read_bytes("before.txt") == b"1"


def _sdk_listing(blob_store: BlobStore, prefix: str = "") -> list[tuple[str, int, str | None]]:
    """What the SDK's own ``list_blobs`` (its full deserializer) says: the ground truth for ``BlobStore.list``."""
    return sorted(
        (
            b.name,
            int(b.size),
            bytes(b.content_settings.content_md5).hex() if b.content_settings.content_md5 else None,
        )
        for b in blob_store._client.list_blobs(name_starts_with=prefix or None)
    )


@pytest.mark.parametrize("page_size", [None, 2])
def test_blob_listing_reads_names_sizes_and_md5s_as_the_sdk_does(
    blob_store: BlobStore, page_size: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ["plain.txt", "with space/and ü.txt", "odd %41 &<>'\".bin", "empty", "d/e/f/deep.dat"]
    for i, name in enumerate(names):
        blob_store.write_bytes(name, os.urandom(i * 1000))
    # A blob committed from blocks carries no whole-blob Content-MD5 unless the client sets one.
    blocks = blob_store._client.get_blob_client("from-blocks.bin")
    blocks.stage_block("YmxvY2sx", b"block data")
    blocks.commit_block_list(["YmxvY2sx"])
    blob_store.list_page_size = page_size

    listed = [(e.path, e.size, e.md5) for e in blob_store.list()]
    assert listed == _sdk_listing(blob_store)
    assert len(listed) == len(names) + 1
    assert [e.path for e in blob_store.list("with")] == ["with space/and ü.txt"]
    assert blob_store.list("nothing-here") == []

    # An SDK whose name pager does not keep the page's XML: the store falls back to list_blobs, same answer.
    from azure.storage.blob._list_blobs_helper import BlobNamesPaged

    real = BlobNamesPaged._extract_data_cb

    def forgetful(self: BlobNamesPaged, get_next_return: object) -> object:
        result = real(self, get_next_return)
        del self._response
        return result

    monkeypatch.setattr(BlobNamesPaged, "_extract_data_cb", forgetful)
    calls: list[object] = []
    real_list_blobs = blob_store._client.list_blobs
    monkeypatch.setattr(
        blob_store._client, "list_blobs", lambda *a, **k: calls.append(k) or real_list_blobs(*a, **k)
    )
    assert [(e.path, e.size, e.md5) for e in blob_store.list()] == listed
    assert calls, "the fallback was not taken"
