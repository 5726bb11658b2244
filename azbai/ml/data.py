"""Give a job's inputs and outputs local paths, the way Azure ML does on a compute node, and stage them out.

``azureml://datastores/<name>/paths/<path>`` resolves against the workspace's :class:`~azbai.ml.registry.Registry`:

==============  =============================  ==================================================================
mode            file datastore (a share)       blob datastore (an Azurite container)
==============  =============================  ==================================================================
``ro_mount``    the share's directory itself   a read-only lazy FUSE mount (:mod:`azbai.local.blobfuse`): a file
                                               is fetched (verified) when the job opens it; writes, creates and
                                               removals fail with ``EROFS``, as on blobfuse's read-only mount.
                                               Where FUSE is not available, a verified download made at start
``download``    a verified copy                a verified copy
``direct``      the store's URL, not a path    the store's URL, not a path
``rw_mount``    the share's directory itself   a lazy FUSE mount: files are fetched as they are opened; the new
                                               and changed files and the removals are written back at the end
                                               (a blob never opened is left as it is). Where FUSE is not
                                               available, a mirror, written back the same way
``upload``      an empty directory, uploaded   an empty directory, uploaded (MD5-verified) at the end
==============  =============================  ==================================================================

``$AZBAI_BLOB_MOUNT`` chooses, as for a Batch AI job (:mod:`azbai.local.runner`): ``auto`` (FUSE where
``/dev/fuse`` opens and ``mount(2)`` succeeds, else the mirror; one log line says which), ``fuse`` (or fail) or
``mirror``. ``eval_mount`` is ``ro_mount``; a ``uri_file`` input is downloaded in every mode (its path is the file
itself; a lazy mount would fetch that whole file anyway). A local path (``./data``) is used in place, read-only by
agreement.

Stage-out runs when the job ends, also after a failure or a cancel, so partial outputs and logs are kept; the
lazy mounts are unmounted first (the job's processes are gone by then), and each mount point is left a link to its
cache, so the run's paths show what the job fetched and wrote. What stage-out has to do is recorded before the
job's processes start (:meth:`Stager.plan`, :func:`write_stage_out`: ``stageout.json``, with each output's mode,
local directory, datastore name and path, and for a lazy mount its cache, removal journal and listing snapshot;
no secret) and carried out by :func:`finish_stage_out`, output by output, under a lock: by the runner at the end,
or, when the runner died, by the next command that looks at the run (:func:`azbai.ml.service.recover_run`), which
first detaches the mounts the dead runner left answering ``ENOTCONN`` (:func:`detach_mounts`). A failed stage-out
is recorded and retried by the next look.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azbai.errors import MlError, StorageError
from azbai.local import blobfuse, transfer
from azbai.local.records import load_record, save_record
from azbai.local.runner import BLOB_MOUNT_ENV, blob_mount_mode, stage_out_items
from azbai.local.stores import Store, check_prefix
from azbai.local.workspace import Workspace
from azbai.ml.registry import Registry
from azbai.ml.runs import COMPLETED, FAILED, STAGE_DONE, STAGE_FAILED, STAGE_PENDING, RunRecord

log = logging.getLogger(__name__)

INPUT_MODES = ("ro_mount", "download", "direct", "eval_mount", "eval_download")
OUTPUT_MODES = ("rw_mount", "upload", "direct")
#: the stage-out plan of a run (in its folder) and its format
STAGEOUT_FILE = "stageout.json"
STAGEOUT_FORMAT = 1
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
    mount: blobfuse.LazyMount | None = None  # a lazy mount: written back from its cache and journal


class Stager:
    """Stages a job's data into ``data_dir`` and back out."""

    def __init__(
        self, workspace: Workspace, registry: Registry, data_dir: Path, env: Mapping[str, str] | None = None
    ) -> None:
        """``env`` holds the :data:`~azbai.local.runner.BLOB_MOUNT_ENV` setting (default: ``os.environ``)."""
        self.workspace = workspace
        self.registry = registry
        self.data_dir = data_dir
        self.env = dict(os.environ if env is None else env)
        self.staged: list[Staged] = []
        self._mounts: list[blobfuse.LazyMount] = []

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
        elif (
            not is_file
            and mode in ("ro_mount", "eval_mount")
            and (mount := self._lazy(name, "inputs", store, location))
        ):
            self.staged.append(
                Staged(name, "inputs", mode, location, str(mount.mountpoint), store, mount=mount)
            )
            return str(mount.mountpoint)
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
        elif mode == "rw_mount" and (mount := self._lazy(name, "outputs", store, location)):
            self.staged.append(
                Staged(name, "outputs", mode, location, str(mount.mountpoint), store, mount=mount)
            )
            return str(mount.mountpoint)
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

    def _lazy(self, name: str, kind: str, store: Store, location: Location) -> blobfuse.LazyMount | None:
        """A blob container path mounted with FUSE (read-only for an input), or None where the mirror (or the
        download) is to be used instead: ``AZBAI_BLOB_MOUNT=mirror``, or no FUSE here (said in one log line)."""
        setting = blob_mount_mode(self.env)
        where = store.url_for(location.path)
        reason = f"{BLOB_MOUNT_ENV}=mirror" if setting == "mirror" else blobfuse.fuse_unavailable()
        if reason is None:
            mount = blobfuse.LazyMount(
                store,
                location.path,
                self.data_dir / kind / name,
                self.data_dir / "mount-cache" / kind / name,
                self.data_dir / "mount-cache" / kind / f"{name}.removed",
                read_only=kind == "inputs",
            )
            try:
                mount.start()
            except blobfuse.FuseUnavailable as exc:
                reason = str(exc)
            except StorageError as exc:
                raise MlError(f"{kind[:-1]} {name!r}: cannot mount {location.uri}: {exc}") from exc
            else:
                self._mounts.append(mount)
                how = "read-only " if mount.read_only else ""
                log.info("%s %r: %s is mounted %swith FUSE (files are fetched as they are opened)",
                         kind[:-1], name, where, how)  # fmt: skip
                return mount
        if setting == "fuse":
            raise MlError(
                f"{kind[:-1]} {name!r}: {BLOB_MOUNT_ENV}=fuse, but a FUSE mount cannot be made here: {reason}"
            )
        copy = "downloaded" if kind == "inputs" else "mirrored"
        log.info("%s %r: %s is %s before the job (no FUSE mount: %s)", kind[:-1], name, where, copy, reason)
        return None

    def unmount(self) -> None:
        """Unmount the lazy mounts (the job's processes are gone); each mount point becomes a link to its cache."""
        for mount in self._mounts:
            mount.stop()
            blobfuse.retire(mount.mountpoint, mount.cache)
        self._mounts.clear()

    def plan(self) -> list[dict[str, Any]]:
        """What stage-out has to do for each output, as ``stageout.json`` keeps it: the datastore by name (no
        secret: it is opened afresh from the registry when the plan is carried out), the path on it, the local
        directory, and for a lazy mount its cache, journal and listing snapshot, for a mirror what it held."""
        items = []
        for item in self.staged:
            if item.kind != "outputs":
                continue
            entry: dict[str, Any] = {
                "output": item.name,
                "mode": item.mode,
                "uri": item.location.uri,
                "datastore": item.location.datastore,
                "prefix": item.location.path,
                "path": item.value,
                "action": "none",
            }
            if item.mount is not None:
                mount = item.mount
                entry.update(
                    action="write-back",
                    cache=str(mount.cache),
                    journal=str(mount.journal),
                    snapshot={rel: list(facts) for rel, facts in mount.snapshot.items()},
                )
            elif item.store is None or item.local is None or item.mode == "direct":
                pass  # a local path or a URL: the job wrote (or did not) where it lives
            elif item.store.kind == "share" and item.mode == "rw_mount":
                pass  # the share's directory itself: written in place
            elif item.mode == "rw_mount":
                entry.update(action="mirror", before=sorted(item.before))
            else:
                entry.update(action="upload")
            entry["done"] = entry["action"] == "none"
            items.append(entry)
        return items


def write_stage_out(record: RunRecord, items: list[dict[str, Any]]) -> None:
    """Record what stage-out has to do (before the job's processes start), so that anyone can finish it: the
    runner at the job's end, or the next command that finds the runner dead."""
    save_record(record.path / STAGEOUT_FILE, {"items": items}, STAGEOUT_FORMAT)
    record.note_stage_out(STAGE_PENDING, None)
    record.save()


def finish_stage_out(workspace: Workspace, record: RunRecord) -> RunRecord:
    """Do what is left of a run's recorded stage-out (all of it, or what failed last time); the saved record.

    Serialised by a lock per run, so two commands never stage out one run at once, and each output is marked
    done as soon as it is in storage, so a stage-out cut short is finished, not redone. Each datastore is opened
    afresh: the emulator is found on its current port, or started, as for any other command. Every output is
    tried; the problems are recorded (``stage_out`` Failed, ``stage_out_error``, and in the run's message) for the
    next look to retry.
    A finished run whose job succeeded (exit code 0, no message) and whose stage-out now succeeded is Completed.
    """
    from filelock import FileLock

    with FileLock(str(record.path / "stageout.lock")):
        record = RunRecord.load(record.path)
        path = record.path / STAGEOUT_FILE
        if record.stage_out not in (STAGE_PENDING, STAGE_FAILED) or not path.exists():
            return record
        items = load_record(
            path, STAGEOUT_FORMAT, "stage-out plan", MlError, lambda data: list(data["items"]),
            hint="delete the run's folder, or use the azbai version that wrote it",
        )  # fmt: skip
        problems = stage_out_items(
            path,
            STAGEOUT_FORMAT,
            items,
            lambda item: _stage_out_item(workspace, item),
            lambda item: f"output {item['output']!r} ({item['uri']})",
        )
        record.note_stage_out(STAGE_FAILED if problems else STAGE_DONE, "; ".join(problems) or None)
        if not problems:
            log.info("%s: staged out %d output(s)", record.name, sum(i["action"] != "none" for i in items))
            if record.status == FAILED and record.exit_code == 0 and not record.message:
                record.status = COMPLETED  # the job itself succeeded; now its outputs are in storage too
        record.save()
        return record


def _stage_out_item(workspace: Workspace, item: dict[str, Any]) -> None:
    action = item["action"]
    if action == "none":
        return
    local = Path(item["path"])
    if action == "write-back":
        # a lazy mount a dead runner left (ENOTCONN) is detached and retired before the store is opened: its path
        # shows the job's files while storage is down
        blobfuse.retire(local, Path(item["cache"]))
    store = Registry(workspace).datastore(item["datastore"]).open(workspace)
    prefix = item["prefix"]
    if action == "write-back":
        snapshot = {rel: (int(facts[0]), str(facts[1])) for rel, facts in item["snapshot"].items()}
        changed, removed = blobfuse.write_back(
            store, item["prefix"], Path(item["cache"]), snapshot, item["journal"], keep=_is_data
        )
        log.info("output %r: wrote back %d file(s), deleted %d", item["output"], changed, removed)
        return
    if not local.is_dir():
        raise StorageError(f"{local} is gone: its files cannot be staged out")
    transfer.upload(local, store, prefix, incremental=action == "mirror")
    if action == "mirror":
        now = {rel for _, rel in _files(local)}
        for rel in sorted(set(item["before"]) - now):
            store.delete(posixpath.join(prefix, rel), missing_ok=True)


def detach_mounts(run_dir: Path) -> int:
    """Detach the lazy mounts a dead runner left under its run's folder (they answer ``ENOTCONN``); how many."""
    return blobfuse.detach_under(run_dir)


def _is_data(rel: str) -> bool:
    """Not one of azbai's own files (``.azbai-*``)."""
    from azbai.local.stores import AZBAI_FILE_PREFIX

    return not Path(rel).name.startswith(AZBAI_FILE_PREFIX)


def _files(root: Path) -> list[tuple[Path, str]]:
    from azbai.local.stores import iter_local_files

    return [(p, rel) for p, rel in iter_local_files(root) if _is_data(rel)]
