"""Datastores on the local workspace: registrations that persist without keys, verified transfers, references."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from azbai.aml import DataReference, Datastore, Workspace
from azbai.aml.progress import progress_bar
from azbai.errors import PlanError, StorageError, TransferError
from tests.aml.conftest import unique, write

KEY = "c2VjcmV0LWFjY291bnQta2V5LW5ldmVyLXdyaXR0ZW4="


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_registrations_persist_without_keys(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    assert ws.get_default_datastore().name == "workspaceblobstore"
    assert sorted(ws.datastores) == ["workspaceblobstore", "workspacefilestore"]
    share = Datastore.register_azure_file_share(
        ws, "scripts", "scripts", "mystorage", account_key=KEY, create_if_not_exists=True
    )
    blob = Datastore.register_azure_blob_container(ws, "data_ds", "data", "mystorage", sas_token=KEY)
    assert (share.datastore_type, share.account_name, share.container_name) == (
        "AzureFile",
        "mystorage",
        "scripts",
    )
    assert (blob.datastore_type, blob.container_name) == ("AzureBlob", "data")
    assert (tmp_path / "ws" / "shares" / "mystorage" / "scripts").is_dir()  # create_if_not_exists

    again = Workspace(tmp_path / "ws")  # a new process would see the same
    assert sorted(again.datastores) == ["data_ds", "scripts", "workspaceblobstore", "workspacefilestore"]
    assert Datastore.get(again, "data_ds") == blob and Datastore(again, "scripts") == share
    again.set_default_datastore("scripts")
    assert Workspace(tmp_path / "ws").get_default_datastore() == share
    for path in (tmp_path / "ws").rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text(errors="replace"), path
    saved = json.loads((tmp_path / "ws" / "aml" / "datastores.json").read_text())
    assert saved["format"] == 1 and saved["datastores"]["data_ds"] == {
        "datastore_type": "AzureBlob",
        "account_name": "mystorage",
        "container_name": "data",
    }


def test_bad_registrations_and_unknown_datastores(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    Datastore.register_azure_file_share(ws, "scripts", "scripts", "mystorage")
    with pytest.raises(StorageError, match=r"no datastore 'scirpts'.*did you mean 'scripts'"):
        Datastore.get(ws, "scirpts")
    with pytest.raises(StorageError, match="no datastore"):
        ws.set_default_datastore("nothere")
    with pytest.raises(StorageError, match=r"already registered.*overwrite=True"):
        Datastore.register_azure_file_share(ws, "scripts", "other", "mystorage")
    replaced = Datastore.register_azure_file_share(ws, "scripts", "other", "mystorage", overwrite=True)
    assert Datastore.get(ws, "scripts").container_name == "other" == replaced.container_name
    with pytest.raises(StorageError, match="invalid datastore name"):
        Datastore.register_azure_blob_container(ws, "my-data", "data", "mystorage")
    with pytest.raises(StorageError, match="invalid container name"):
        Datastore.register_azure_blob_container(ws, "data", "Data_Container", "mystorage")
    with pytest.raises(StorageError, match="invalid storage account name"):
        Datastore.register_azure_file_share(ws, "data", "data", "My-Account")
    with pytest.raises(StorageError, match="workspace's own datastore"):
        Datastore.register_azure_blob_container(ws, "workspaceblobstore", "mine", "mystorage")


def test_upload_and_download_verify_and_respect_overwrite(ws: Workspace, tmp_path: Path) -> None:
    source = tmp_path / "src"
    write(source / "a.txt", "alpha\n")
    write(source / "deep" / "b.txt", "beta\n")
    ds = Datastore.register_azure_blob_container(ws, unique("d"), unique(), "devstoreaccount1")
    ref = ds.upload(source, target_path="set", show_progress=False)
    assert isinstance(ref, DataReference) and ref.path_on_datastore == "set"
    assert sorted(e.path for e in ds.store().list()) == ["set/a.txt", "set/deep/b.txt"]

    write(source / "a.txt", "changed\n")
    ds.upload(source, target_path="set", show_progress=False)  # overwrite=False: what is there stays
    assert ds.store().read_bytes("set/a.txt") == b"alpha\n"
    ds.upload(source, target_path="set", overwrite=True, show_progress=False)
    assert ds.store().read_bytes("set/a.txt") == b"changed\n"

    assert ds.download(tmp_path / "out", prefix="set", show_progress=False) == 2
    assert tree(tmp_path / "out") == {"set/a.txt": b"changed\n", "set/deep/b.txt": b"beta\n"}
    (tmp_path / "out" / "set" / "a.txt").write_text("local edit\n")
    assert ds.download(tmp_path / "out", prefix="set", show_progress=False) == 0  # kept
    assert (tmp_path / "out" / "set" / "a.txt").read_text() == "local edit\n"
    assert ds.download(tmp_path / "out", prefix="set", overwrite=True, show_progress=False) == 2
    assert (tmp_path / "out" / "set" / "a.txt").read_text() == "changed\n"
    assert ds.download(tmp_path / "one", prefix="set/deep/b.txt", show_progress=False) == 1
    assert tree(tmp_path / "one") == {"set/deep/b.txt": b"beta\n"}


def test_upload_files_and_bad_sources(ws: Workspace, tmp_path: Path) -> None:
    share = Datastore.register_azure_file_share(ws, unique("s"), unique(), "devstoreaccount1")
    a = write(tmp_path / "files" / "x" / "a.txt", "a\n")
    b = write(tmp_path / "files" / "y" / "b.txt", "b\n")
    share.upload_files([a, b], target_path="up", show_progress=False)  # root: their common folder
    assert sorted(e.path for e in share.store().list()) == ["up/x/a.txt", "up/y/b.txt"]
    share.upload_files([a], relative_root=tmp_path, show_progress=False)
    assert share.store().exists("files/x/a.txt")
    with pytest.raises(StorageError, match="not a directory"):
        share.upload(tmp_path / "missing")
    with pytest.raises(StorageError, match="no such file"):
        share.upload_files([tmp_path / "missing.txt"])
    with pytest.raises(StorageError, match="not under relative_root"):
        share.upload_files([a], relative_root=tmp_path / "files" / "y")
    with pytest.raises(StorageError, match="invalid path"):
        share.upload(tmp_path / "files", target_path="../escape")


def test_a_corrupted_blob_does_not_download(ws: Workspace, tmp_path: Path) -> None:
    ds = Datastore.register_azure_blob_container(ws, unique("d"), unique(), "devstoreaccount1")
    ds.upload_files([write(tmp_path / "f.txt", "good\n")], show_progress=False)
    from azure.storage.blob import ContentSettings

    store = ds.store()
    blob = store._client.get_blob_client("f.txt")  # type: ignore[attr-defined]
    blob.set_http_headers(ContentSettings(content_md5=bytearray(16)))  # a wrong recorded MD5
    with pytest.raises(TransferError, match="do not match"):
        ds.download(tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out" / "f.txt").exists()


def test_references_and_their_modes(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    ds = Datastore.register_azure_file_share(ws, "files", "files", "mystorage")
    ref = ds.path("data/mnist", data_reference_name="mnist")
    assert (ref.mode, str(ref)) == ("mount", "$AZUREML_DATAREFERENCE_mnist")
    down = ref.as_download(path_on_compute="mnist")
    up = ref.as_upload(path_on_compute="outputs/model", overwrite=True)
    assert (down.mode, down.path_on_compute, down.path_on_datastore) == ("download", "mnist", "data/mnist")
    assert (up.mode, up.overwrite, up.as_mount().mode) == ("upload", True, "mount")
    whole = ds.as_download()
    assert (whole.data_reference_name, whole.mode, whole.path_on_datastore) == ("files", "download", None)
    assert len(ds.path("x").data_reference_name) == 32  # a fresh uuid, as Azure ML names it
    config = down.to_config()
    assert (config.data_store_name, config.path_on_data_store, config.mode) == (
        "files",
        "data/mnist",
        "download",
    )
    with pytest.raises(PlanError, match="mode 'copy' is not one of mount, download, upload"):
        DataReference(ds, "x", "data", mode="copy")
    with pytest.raises(PlanError, match="must be relative"):
        ref.as_download(path_on_compute="/abs")
    with pytest.raises(PlanError, match=r"'\.\.'"):
        ds.path("data/../../etc")
    with pytest.raises(PlanError, match="invalid data reference name"):
        ds.path("x", data_reference_name="has space")


def test_progress_is_drawn_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    pipe, terminal = io.StringIO(), Terminal()
    monkeypatch.setattr("sys.stderr", pipe)
    with progress_bar("upload", True) as callback:
        assert callback is None
    monkeypatch.setattr("sys.stderr", terminal)
    with progress_bar("upload data", True) as callback:
        assert callback is not None
        callback(0, 2_000_000, 0, 2)
        callback(2_000_000, 2_000_000, 2, 2)
    text = terminal.getvalue()
    assert "upload data [" in text and "100% 2/2 files, 2.0/2.0 MB" in text and text.endswith("\n")
    with progress_bar("upload", False) as callback:
        assert callback is None
    assert pipe.getvalue() == ""
