"""``az group …`` and ``az storage …``, locally: groups are records, accounts are Azurite accounts, shares are
directories (``<workspace>/shares/<account>/<share>``), containers and blobs are Azurite's.

The key ``az storage account keys list`` prints is the local one (Azurite's published development key, not a
secret). ``--account-key``, ``--sas-token`` and ``--connection-string`` are accepted and never written: a local
account needs no key. Without ``--account-name`` the account is ``$AZURE_STORAGE_ACCOUNT`` (or the one named in
``$AZURE_STORAGE_CONNECTION_STRING``), as az took it.
"""

from __future__ import annotations

import fnmatch
import mimetypes
import os
import posixpath
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from azbai.az.context import Context, Result, timestamp
from azbai.az.state import check_account_name, check_group_name, resource_id
from azbai.errors import AzError, StorageError
from azbai.local.azurite import DEV_ACCOUNT, DEV_KEY, HOST

# -- groups -------------------------------------------------------------------------------------------------------


def group_json(record: dict[str, Any]) -> dict[str, Any]:
    """A resource group as ``az group show`` printed it."""
    return {
        "id": resource_id(record["name"]),
        "location": record["location"],
        "managedBy": None,
        "name": record["name"],
        "properties": {"provisioningState": "Succeeded"},
        "tags": None,
        "type": "Microsoft.Resources/resourceGroups",
    }


def group_create(ctx: Context, name: str, location: str, **_: Any) -> Result:
    """``az group create -n NAME -l LOCATION``: a local namespace (creating an existing one keeps it)."""
    path = ctx.ns.group_dir(check_group_name(name)) / "group.json"
    record = ctx.ns.load(path) if path.exists() else {"name": name, "location": location}
    ctx.ns.save(path, record)
    return Result(group_json(record))


def group_show(ctx: Context, name: str, **_: Any) -> Result:
    """``az group show -n NAME``."""
    return Result(group_json(ctx.ns.group(name)))


def group_list(ctx: Context, **_: Any) -> Result:
    """``az group list``."""
    return Result([group_json(r) for r in ctx.ns.records("groups/*/group.json")])


def group_exists(ctx: Context, name: str, **_: Any) -> Result:
    """``az group exists -n NAME``: true or false."""
    return Result((ctx.ns.group_dir(name) / "group.json").exists())


def group_delete(ctx: Context, name: str, yes: bool, **_: Any) -> Result:
    """``az group delete -n NAME [-y]``: the group's jobs, clusters, workspaces and storage accounts (their shares
    and containers) go; asks first without ``-y``."""
    from azbai.az.workspaces import delete_workspace_contents

    group = ctx.ns.group(name)
    if not yes and not ctx.confirm("Are you sure you want to perform this operation?"):
        return Result(printed=False)
    for path in sorted((ctx.ns.group_dir(name) / "workspaces").glob("*/workspace.json")):
        record = ctx.ns.load(path)
        delete_workspace_contents(ctx, group["name"], record["name"])
    for account in ctx.ns.accounts_of(group["name"]):
        _delete_account_data(ctx, account["name"])
        ctx.ns.remove(ctx.ns.account_file(account["name"]))
    ctx.ns.remove(ctx.ns.group_dir(name))
    return Result(printed=False)


# -- storage accounts ---------------------------------------------------------------------------------------------


def account_json(ctx: Context, record: dict[str, Any]) -> dict[str, Any]:
    """A storage account as ``az storage account show`` printed it, with its local endpoints."""
    from azbai.local.azurite import Emulator

    name = record["name"]
    share_root = (ctx.workspace.root / "shares" / name).as_uri()
    state = Emulator(ctx.workspace).state()
    host = f"{HOST}:{state.port}" if state else HOST
    return {
        "creationTime": record["creationTime"],
        "id": resource_id(record["resourceGroup"], "Microsoft.Storage/storageAccounts", name),
        "kind": record["kind"],
        "location": record["location"],
        "name": name,
        "primaryEndpoints": {"blob": f"http://{host}/{name}/", "file": share_root + "/"},
        "primaryLocation": record["location"],
        "provisioningState": "Succeeded",
        "resourceGroup": record["resourceGroup"],
        "sku": {"name": record["sku"], "tier": record["sku"].split("_")[0]},
        "statusOfPrimary": "available",
        "type": "Microsoft.Storage/storageAccounts",
    }


def account_create(
    ctx: Context,
    name: str,
    resource_group: str,
    location: str | None,
    sku: str | None,
    kind: str | None,
    **_: Any,
) -> Result:
    """``az storage account create -n NAME -g GROUP``: an Azurite account (and a root for its shares)."""
    group = ctx.ns.group(resource_group)
    check_account_name(name)
    existing = ctx.ns.account(name)
    if existing is not None and existing["resourceGroup"].lower() != group["name"].lower():
        raise AzError(f"The storage account named {name} is already taken.")
    record = existing or {
        "name": name,
        "resourceGroup": group["name"],
        "location": location or group["location"],
        "sku": sku or "Standard_RAGRS",
        "kind": kind or "StorageV2",
        "creationTime": timestamp(),
    }
    ctx.ns.save(ctx.ns.account_file(name), record)
    (ctx.workspace.root / "shares" / name).mkdir(parents=True, exist_ok=True)
    return Result(account_json(ctx, record))


def _account_record(ctx: Context, name: str) -> dict[str, Any]:
    record = ctx.ns.account(check_account_name(name))
    if record is None:
        raise AzError(
            f"The storage account '{name}' was not found (az storage account create -n {name} -g GROUP)."
        )
    return record


def account_show(ctx: Context, name: str, **_: Any) -> Result:
    """``az storage account show -n NAME``."""
    return Result(account_json(ctx, _account_record(ctx, name)))


def account_list(ctx: Context, resource_group: str | None, **_: Any) -> Result:
    """``az storage account list [-g GROUP]``."""
    records = ctx.ns.records("storage-accounts/*.json")
    if resource_group:
        records = (r for r in records if r["resourceGroup"].lower() == resource_group.lower())
    return Result([account_json(ctx, r) for r in records])


def account_delete(ctx: Context, name: str, yes: bool, **_: Any) -> Result:
    """``az storage account delete -n NAME [-y]``: its shares and containers go."""
    _account_record(ctx, name)
    if not yes and not ctx.confirm("Are you sure you want to perform this operation?"):
        return Result(printed=False)
    _delete_account_data(ctx, name)
    ctx.ns.remove(ctx.ns.account_file(name))
    return Result(printed=False)


def account_keys(ctx: Context, account_name: str, **_: Any) -> Result:
    """``az storage account keys list -n NAME``: the local key (Azurite's development key, not a secret)."""
    _account_record(ctx, account_name)
    return Result([{"keyName": k, "permissions": "Full", "value": DEV_KEY} for k in ("key1", "key2")])


def account_connection_string(ctx: Context, name: str, **_: Any) -> Result:
    """``az storage account show-connection-string -n NAME``: the local emulator's (the emulator is started)."""
    from azbai.local.azurite import Emulator

    _account_record(ctx, name)
    emulator = Emulator(ctx.workspace)
    emulator.ensure([name])
    return Result({"connectionString": emulator.connection_string(name)})


def _delete_account_data(ctx: Context, account: str) -> None:
    from azbai.local.azurite import Emulator
    from azbai.local.runner import remove_tree

    remove_tree(ctx.workspace.root / "shares" / account)
    for index in (ctx.workspace.root / "shares").glob(f"{account}/.*.md5.json"):
        index.unlink()
    if not ctx.workspace.azurite_dir.exists():
        return  # no emulator ever ran here: no containers to remove
    try:
        service = Emulator(ctx.workspace).blob_service(account)
        for container in service.list_containers():
            service.delete_container(container.name)
    except Exception as exc:  # azure.core errors, translated at this boundary
        raise StorageError(f"cannot delete the containers of account '{account}': {exc}") from exc


# -- data plane: shares, directories, files, containers, blobs ----------------------------------------------------


def data_account(ctx: Context, account_name: str | None, connection_string: str | None) -> str:
    """The account a data command names: ``--account-name``, else the connection string's, else the environment."""
    name = account_name
    text = connection_string or ctx.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if not name and text:
        parts = dict(p.split("=", 1) for p in text.split(";") if "=" in p)
        name = parts.get("AccountName")
    name = name or ctx.environ.get("AZURE_STORAGE_ACCOUNT")
    if not name:
        raise AzError(
            "Missing credentials to access storage service. The following variations are accepted:\n"
            "    (1) account name (--account-name, or set AZURE_STORAGE_ACCOUNT);\n"
            "    (2) connection string (--connection-string, or set AZURE_STORAGE_CONNECTION_STRING).\n"
            "Locally no key is needed."
        )
    if name != DEV_ACCOUNT:
        _account_record(ctx, name)
    return name


def share_create(
    ctx: Context, name: str, account_name: str | None, connection_string: str | None, **_: Any
) -> Result:
    """``az storage share create -n SHARE``: a directory."""
    from azbai.local.stores import check_container_name

    account = data_account(ctx, account_name, connection_string)
    directory = ctx.workspace.share_dir(account, check_container_name(name, "share"))
    created = not directory.is_dir()
    directory.mkdir(parents=True, exist_ok=True)
    return Result({"created": created})


def share_delete(
    ctx: Context, name: str, account_name: str | None, connection_string: str | None, **_: Any
) -> Result:
    """``az storage share delete -n SHARE``."""
    from azbai.local.runner import remove_tree

    account = data_account(ctx, account_name, connection_string)
    directory = ctx.workspace.share_dir(account, name)
    existed = directory.is_dir()
    remove_tree(directory)
    return Result({"deleted": existed})


def share_list(ctx: Context, account_name: str | None, connection_string: str | None, **_: Any) -> Result:
    """``az storage share list``."""
    account = data_account(ctx, account_name, connection_string)
    root = ctx.workspace.root / "shares" / account
    names = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    return Result([{"metadata": None, "name": n, "properties": {"quota": 5120}} for n in names])


def _share_path(ctx: Context, account: str, share: str, path: str) -> Path:
    from azbai.local.stores import check_path

    root = ctx.workspace.share_dir(account, share)
    if not root.is_dir():
        raise AzError(f"The specified share does not exist. (share '{share}' of account '{account}')")
    return root / check_path(path) if path.strip("/") else root


def directory_create(
    ctx: Context,
    name: str,
    share_name: str,
    account_name: str | None,
    connection_string: str | None,
    **_: Any,
) -> Result:
    """``az storage directory create -n DIR -s SHARE``; its parent must exist, as in Azure Files."""
    account = data_account(ctx, account_name, connection_string)
    target = _share_path(ctx, account, share_name, name.strip("/"))
    if not target.parent.is_dir():
        raise AzError("The specified parent path does not exist.")
    created = not target.is_dir()
    target.mkdir(exist_ok=True)
    return Result({"created": created})


def file_upload(
    ctx: Context,
    share_name: str,
    source: str,
    path: str | None,
    account_name: str | None,
    connection_string: str | None,
    **_: Any,
) -> Result:
    """``az storage file upload -s SHARE --source FILE [-p PATH]``: a ``PATH`` whose last part has no '.' is a
    directory (the file keeps its name), as az's validator read it; the directory must exist."""
    from azbai.local.stores import open_store

    account = data_account(ctx, account_name, connection_string)
    local = Path(source)
    if not local.is_file():
        raise AzError(f"[Errno 2] No such file or directory: '{source}'")
    directory, name = posixpath.split((path or "").strip("/"))
    if "." not in name:
        directory, name = (path or "").strip("/"), local.name
    if not _share_path(ctx, account, share_name, directory).is_dir():
        raise AzError("The specified parent path does not exist.")
    store = open_store(ctx.workspace, account, share=share_name)
    entry = store.upload_file(local, posixpath.join(directory, name) if directory else name)
    return Result(
        {
            "contentMd5": entry.md5,
            "etag": f'"0x{(entry.md5 or "")[:15].upper()}"',
            "lastModified": timestamp(),
        }
    )


def file_download(
    ctx: Context,
    share_name: str,
    path: str,
    dest: str | None,
    account_name: str | None,
    connection_string: str | None,
    **_: Any,
) -> Result:
    """``az storage file download -s SHARE -p PATH [--dest FILE]``."""
    from azbai.local.stores import open_store

    account = data_account(ctx, account_name, connection_string)
    store = open_store(ctx.workspace, account, share=share_name)
    target = Path(dest) if dest else Path(posixpath.basename(path))
    if target.is_dir():
        target = target / posixpath.basename(path)
    entry = store.download_file(path.strip("/"), target)
    return Result({"name": posixpath.basename(path), "properties": {"contentLength": entry.size}})


def file_list(
    ctx: Context,
    share_name: str,
    path: str | None,
    account_name: str | None,
    connection_string: str | None,
    **_: Any,
) -> Result:
    """``az storage file list -s SHARE [-p DIR]``: the entries of one directory."""
    account = data_account(ctx, account_name, connection_string)
    directory = _share_path(ctx, account, share_name, (path or "").strip("/"))
    if not directory.is_dir():
        raise AzError("The specified resource does not exist.")
    items = []
    for child in sorted(directory.iterdir()):
        if child.name.startswith(".azbai-"):
            continue
        size = child.stat().st_size if child.is_file() else None
        kind = "file" if child.is_file() else "dir"
        items.append(
            {"metadata": None, "name": child.name, "properties": {"contentLength": size}, "type": kind}
        )
    return Result(items)


def container_create(
    ctx: Context, name: str, account_name: str | None, connection_string: str | None, **_: Any
) -> Result:
    """``az storage container create -n NAME``: an Azurite container."""
    from azbai.local.azurite import Emulator
    from azbai.local.stores import check_container_name

    account = data_account(ctx, account_name, connection_string)
    check_container_name(name)
    try:
        client = Emulator(ctx.workspace).blob_service(account).get_container_client(name)
        if client.exists():
            return Result({"created": False})
        client.create_container()
    except StorageError:
        raise
    except Exception as exc:  # azure.core errors, translated at this boundary
        raise StorageError(f"cannot create container '{name}' of account '{account}': {exc}") from exc
    return Result({"created": True})


def container_list(ctx: Context, account_name: str | None, connection_string: str | None, **_: Any) -> Result:
    """``az storage container list``."""
    from azbai.local.azurite import Emulator

    account = data_account(ctx, account_name, connection_string)
    try:
        names = [c.name for c in Emulator(ctx.workspace).blob_service(account).list_containers()]
    except Exception as exc:  # azure.core errors, translated at this boundary
        raise StorageError(f"cannot list the containers of account '{account}': {exc}") from exc
    return Result([{"metadata": None, "name": n, "properties": {}} for n in names])


def blob_upload(
    ctx: Context,
    container_name: str,
    file: str,
    name: str,
    account_name: str | None,
    connection_string: str | None,
    **_: Any,
) -> Result:
    """``az storage blob upload -c CONTAINER -f FILE -n NAME``."""
    from azbai.local.stores import open_store

    account = data_account(ctx, account_name, connection_string)
    if not Path(file).is_file():
        raise AzError(f"[Errno 2] No such file or directory: '{file}'")
    entry = open_store(ctx.workspace, account, container=container_name).upload_file(file, name.strip("/"))
    return Result({"etag": f'"0x{(entry.md5 or "")[:15].upper()}"', "lastModified": timestamp()})


def blob_upload_batch(
    ctx: Context,
    source: str,
    destination: str,
    destination_path: str | None,
    pattern: str | None,
    dryrun: bool,
    account_name: str | None,
    connection_string: str | None,
    **_: Any,
) -> Result:
    """``az storage blob upload-batch -s DIR -d CONTAINER[/PATH]|URL [--destination-path P] [--pattern GLOB]``: every
    file under ``DIR`` whose path relative to it matches ``GLOB`` (fnmatch, as az), to ``PATH/P/<relative path>``."""
    uploaded = _upload_batch(
        ctx, "blob", source, destination, destination_path, pattern, dryrun, account_name, connection_string
    )
    return Result(
        [
            {
                "Blob": url,
                "Last Modified": None if dryrun else timestamp(),
                "Type": mimetypes.guess_type(url)[0] or "application/octet-stream",
                "eTag": None,
            }
            for url in uploaded
        ]
    )


def file_upload_batch(
    ctx: Context,
    source: str,
    destination: str,
    destination_path: str | None,
    pattern: str | None,
    dryrun: bool,
    account_name: str | None,
    connection_string: str | None,
    **_: Any,
) -> Result:
    """``az storage file upload-batch -s DIR -d SHARE[/PATH]|URL [--destination-path P] [--pattern GLOB]``: the
    URLs of the files uploaded."""
    return Result(
        _upload_batch(
            ctx,
            "share",
            source,
            destination,
            destination_path,
            pattern,
            dryrun,
            account_name,
            connection_string,
        )
    )


def _upload_batch(
    ctx: Context,
    kind: str,
    source: str,
    destination: str,
    destination_path: str | None,
    pattern: str | None,
    dryrun: bool,
    account_name: str | None,
    connection_string: str | None,
) -> list[str]:
    from azbai.local.stores import iter_local_files, open_store

    url_account, container, prefix = _destination(destination)
    account = data_account(ctx, account_name or url_account, connection_string)
    prefix = "/".join(p for p in (prefix, (destination_path or "").strip("/")) if p)
    root = Path(source)
    if not root.is_dir():
        raise AzError(f"incorrect usage: source must be an existing directory: '{source}'")
    files = [
        (path, rel) for path, rel in iter_local_files(root) if not pattern or fnmatch.fnmatch(rel, pattern)
    ]
    store = open_store(ctx.workspace, account, **{"container" if kind == "blob" else "share": container})

    def upload(item: tuple[Path, str]) -> str:
        local, rel = item
        target = posixpath.join(prefix, rel) if prefix else rel
        if not dryrun:
            store.upload_file(local, target)
        return store.url_for(target)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(upload, files))


def _destination(destination: str) -> tuple[str | None, str, str]:
    """``CONTAINER[/PATH]`` or ``https://ACCOUNT.blob|file.core.windows.net/CONTAINER[/PATH]``: account, container,
    path."""
    from urllib.parse import urlsplit

    account = None
    text = destination
    if destination.startswith(("https://", "http://")):
        parts = urlsplit(destination)
        account = parts.netloc.split(".", 1)[0]
        text = parts.path
    container, _sep, prefix = text.strip("/").partition("/")
    return account, container, prefix.strip("/")


def blob_list(
    ctx: Context,
    container_name: str,
    prefix: str | None,
    account_name: str | None,
    connection_string: str | None,
    **_: Any,
) -> Result:
    """``az storage blob list -c CONTAINER [--prefix P]``."""
    from azbai.local.stores import open_store

    account = data_account(ctx, account_name, connection_string)
    store = open_store(ctx.workspace, account, container=container_name)
    return Result(
        [
            {
                "name": e.path,
                "properties": {"contentLength": e.size, "contentSettings": {"contentMd5": e.md5}},
            }
            for e in store.list(prefix or "")
        ]
    )


def blob_download(
    ctx: Context,
    container_name: str,
    name: str,
    file: str,
    account_name: str | None,
    connection_string: str | None,
    **_: Any,
) -> Result:
    """``az storage blob download -c CONTAINER -n NAME -f FILE``."""
    from azbai.local.stores import open_store

    account = data_account(ctx, account_name, connection_string)
    entry = open_store(ctx.workspace, account, container=container_name).download_file(name, file)
    return Result({"name": name, "properties": {"contentLength": entry.size}})
