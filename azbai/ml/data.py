"""Give a job's inputs and outputs local paths, the way Azure ML does on a compute node, and stage them out.

``azureml://datastores/<name>/paths/<path>`` resolves against the workspace's :class:`~azbai.ml.registry.Registry`:

==============  =============================  ==================================================================
mode            file datastore (a share)       blob datastore (an Azurite container)
==============  =============================  ==================================================================
``ro_mount``    the share's directory itself   a verified download (blobfuse's read-only view, taken at start)
``download``    a verified copy                a verified copy
``direct``      the store's URL, not a path    the store's URL, not a path
``rw_mount``    the share's directory itself   a mirror, its new, changed and deleted files written back at the end
``upload``      an empty directory, uploaded   an empty directory, uploaded (MD5-verified) at the end
==============  =============================  ==================================================================

Stage-out runs when the job ends, also after a failure or a cancel, so partial outputs and logs are kept. A
``uri_file`` input's path is the file itself. A local path (``./data``) is used in place, read-only by agreement.
"""

from __future__ import annotations

import logging
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

from azbai.errors import AzbaiError, MlError, StorageError
from azbai.local import transfer
from azbai.local.stores import Store, check_prefix
from azbai.local.workspace import Workspace
from azbai.ml.registry import Registry

log = logging.getLogger(__name__)

INPUT_MODES = ("ro_mount", "download", "direct", "eval_mount", "eval_download")
OUTPUT_MODES = ("rw_mount", "upload", "direct")
_URI = re.compile(r"^azureml://datastores/(?P<name>[^/]+)/paths/(?P<path>.*)$")


@dataclass(frozen=True)
class Location:
    """Where a URI's data lives: a datastore and a path on it (or a local path)."""

    uri: str
    datastore: str | None = None
    path: str = ""
    local: Path | None = None


def parse_uri(uri: str, base: Path | None = None) -> Location:
    """An ``azureml://datastores/…/paths/…`` URI, or a local path (relative to ``base``)."""
    match = _URI.match(uri)
    if match:
        path = match.group("path")
        if "${{" in path or "{" in path:
            raise MlError(f"{uri}: the path still holds an unfilled placeholder")
        try:
            check_prefix(path.strip("/"))
        except StorageError as exc:
            raise MlError(f"{uri}: {exc}") from exc
        return Location(uri, match.group("name"), path.strip("/"))
    if uri.startswith(("azureml:", "http://", "https://", "wasbs://", "abfss://")):
        raise MlError(
            f"{uri}: only azureml://datastores/<name>/paths/<path> URIs and local paths run locally"
        )
    local = Path(uri) if base is None else (base / uri)
    return Location(uri, local=local.resolve())


@dataclass
class Staged:
    """One input or output of a running job: what the command gets, and how it is staged out."""

    name: str
    kind: str  # "inputs" or "outputs"
    mode: str
    location: Location
    value: str  # what ${{inputs.X}} / ${{outputs.Y}} becomes
    store: Store | None = None
    local: Path | None = None
    before: set[str] = field(default_factory=set)  # a blob mirror's files at start (deleted ones are deleted)


class Stager:
    """Stages a job's data into ``data_dir`` and back out."""

    def __init__(self, workspace: Workspace, registry: Registry, data_dir: Path) -> None:
        self.workspace = workspace
        self.registry = registry
        self.data_dir = data_dir
        self.staged: list[Staged] = []

    def store(self, location: Location) -> Store:
        """The local store of a datastore URI."""
        assert location.datastore is not None
        return self.registry.datastore(location.datastore).open(self.workspace)

    def stage_input(self, name: str, type_: str, location: Location, mode: str | None) -> str:
        """An input's local path (or URL for ``direct``)."""
        mode = mode or "ro_mount"
        if mode not in INPUT_MODES:
            raise MlError(f"input {name!r}: mode {mode!r} is not one of {', '.join(INPUT_MODES)}")
        if location.local is not None:
            if not location.local.exists():
                raise MlError(f"input {name!r}: no such local path {location.local}")
            value = str(location.local)
            self.staged.append(Staged(name, "inputs", mode, location, value))
            return value
        store = self.store(location)
        if mode == "direct":
            value = store.url_for(location.path)
            self.staged.append(Staged(name, "inputs", mode, location, value, store))
            return value
        is_file = type_ == "uri_file"
        if store.kind == "share" and mode.endswith("mount"):
            local = self.workspace.share_dir(store.account, store.name) / location.path
            if is_file and not local.is_file():
                raise MlError(f"input {name!r}: no file {location.uri}")
            if not is_file:
                local.mkdir(parents=True, exist_ok=True)
        else:
            target = self.data_dir / "inputs" / name
            try:
                if is_file:
                    if not (store.root_exists() and store.exists(location.path)):
                        raise MlError(f"input {name!r}: no file {location.uri}")
                    local = target / posixpath.basename(location.path)
                    store.download_file(location.path, local)
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    if store.root_exists():
                        transfer.download(store, location.path, target)
                    local = target
            except StorageError as exc:
                raise MlError(f"input {name!r}: cannot read {location.uri}: {exc}") from exc
        self.staged.append(Staged(name, "inputs", mode, location, str(local), store, local))
        return str(local)

    def stage_output(self, name: str, location: Location, mode: str | None) -> str:
        """An output's local directory."""
        mode = mode or "rw_mount"
        if mode not in OUTPUT_MODES:
            raise MlError(f"output {name!r}: mode {mode!r} is not one of {', '.join(OUTPUT_MODES)}")
        if location.local is not None:
            location.local.mkdir(parents=True, exist_ok=True)
            value = str(location.local)
            self.staged.append(Staged(name, "outputs", mode, location, value, local=location.local))
            return value
        store = self.store(location)
        if mode == "direct":
            value = store.url_for(location.path)
            self.staged.append(Staged(name, "outputs", mode, location, value, store))
            return value
        before: set[str] = set()
        if store.kind == "share" and mode == "rw_mount":
            local = self.workspace.share_dir(store.account, store.name) / location.path
            local.mkdir(parents=True, exist_ok=True)
        else:
            local = self.data_dir / "outputs" / name
            local.mkdir(parents=True, exist_ok=True)
            if mode == "rw_mount" and store.root_exists():
                try:
                    transfer.download(store, location.path, local)
                except StorageError as exc:
                    raise MlError(f"output {name!r}: cannot mount {location.uri}: {exc}") from exc
                base = f"{location.path}/" if location.path else ""
                before = {e.path[len(base) :] for e in store.list(base) if e.path.startswith(base)}
        item = Staged(name, "outputs", mode, location, str(local), store, local, before)
        self.staged.append(item)
        return str(local)

    def stage_out(self) -> None:
        """Upload outputs and write blob mirrors back; every output is tried, problems are raised together."""
        problems = []
        for item in self.staged:
            if item.kind != "outputs" or item.store is None or item.local is None or item.mode == "direct":
                continue
            if item.store.kind == "share" and item.mode == "rw_mount":
                continue  # the share's directory itself: written in place
            try:
                transfer.upload(
                    item.local, item.store, item.location.path, incremental=item.mode == "rw_mount"
                )
                if item.mode == "rw_mount":
                    now = {rel for _, rel in _files(item.local)}
                    for rel in sorted(item.before - now):
                        item.store.delete(posixpath.join(item.location.path, rel), missing_ok=True)
            except AzbaiError as exc:
                problems.append(f"output {item.name!r} ({item.location.uri}): {exc}")
        if problems:
            raise StorageError("; ".join(problems))


def _files(root: Path) -> list[tuple[Path, str]]:
    from azbai.local.stores import AZBAI_FILE_PREFIX, iter_local_files

    return [(p, rel) for p, rel in iter_local_files(root) if not Path(rel).name.startswith(AZBAI_FILE_PREFIX)]
