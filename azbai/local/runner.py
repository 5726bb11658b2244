"""Run a plan's job on the embedded default: Azurite and local directories for the data, the launcher for the job.

The runner gives every data reference of the step a local path, the way Azure ML does on a compute node:

=========  ===================================  =====================================================================
mode       Azure File share                     blob container
=========  ===================================  =====================================================================
mount      the share's directory itself: reads  a lazy FUSE mount of the container path (:mod:`azbai.local.blobfuse`):
           and writes are the share's at once   a file is fetched when the job opens it; new, changed and deleted
                                                files are written back when the job ends. Where FUSE is not
                                                available, a per-job mirror: all of it downloaded before the job,
                                                written back the same way
download   a copy made before the job           a verified download made before the job
upload     an empty directory, uploaded after   an empty directory, uploaded (MD5-verified) after the job
=========  ===================================  =====================================================================

``$AZBAI_BLOB_MOUNT`` chooses: ``auto`` (the default: FUSE when ``/dev/fuse`` opens and ``mount(2)`` succeeds,
probed once, else the mirror; one log line says which), ``fuse`` (or fail) or ``mirror``. Either way a blob "mount"
differs from blobfuse in one way a job can notice: other processes see the job's writes when the job ends, not
when each file is closed. An output directory whose Batch AI path lies on a mounted volume
(``$AZ_BATCHAI_JOB_MOUNT_ROOT/afs/…``) is written through that mount, as on Batch AI: ``$AZ_BATCHAI_OUTPUT_<ID>``
is ``<pathPrefix>/<segment>/outputs/<pathSuffix>`` under the mount root, and the upload staging of the Azure ML
form is not used locally.

Nothing is stranded. What stage-out has to do is written to ``stageout.json`` before the job starts; stage-out
(write-back and uploads, each store opened afresh so a restarted or stopped emulator is found or started) runs
after a failed or terminated job too, so partial outputs and logs are kept; a job whose stage-out fails is reported
failed, never succeeded, and the next ``azbai job`` command that looks at it tries again (:func:`recover_job`).
The launcher dies with its runner (``PR_SET_PDEATHSIG``) and the job's processes with the launcher; a runner that
died anyway is noticed by the next command, which stops what is left, records why and finishes the stage-out.
A lazy mount's stage-out item names its cache and the journal of listed paths the job removed (written as they
go), so that write-back, by whoever does it, uploads what the job wrote and deletes only what it removed; a mount
whose server died with its runner (``ENOTCONN``) is detached first, and ``job delete`` detaches one left behind.

The job's environment is Batch AI's: the launcher's variables, the job's ``environmentVariables`` and ``secrets``,
and a small base (:data:`BASE_ENVIRONMENT`: PATH with the venv first, HOME, LANG, …); nothing else of the
caller's environment unless named (``passthrough``, ``azbai job create --env NAME``).

``python -m azbai.local.runner JOB_DIR`` runs a recorded job (``azbai job create`` starts it in the background
this way); secrets reach it through its environment only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azbai import launcher
from azbai.errors import AzbaiError, JobError, StorageError
from azbai.local import blobfuse, transfer
from azbai.local.azurite import DEV_ACCOUNT, Emulator
from azbai.local.jobs import (
    DONE,
    FAILED,
    PENDING,
    QUEUED,
    RUNNING,
    STAGE_FAILED,
    SUCCEEDED,
    TERMINATED,
    JobRecord,
    OutputLocation,
    now,
    process_start,
)
from azbai.local.processes import by_environment, stop_processes
from azbai.local.records import load_record, save_record
from azbai.local.stores import Store, file_md5, iter_local_files, open_store
from azbai.local.warm import CommandPool
from azbai.local.workspace import Workspace
from azbai.plan.model import (
    DataMode,
    DataReference,
    Datastore,
    Job,
    MountRoot,
    Plan,
    StoreKind,
    VolumeKind,
    fill_segment,
)
from azbai.plan.serialize import job_from_json, plan_from_dict

log = logging.getLogger(__name__)

#: what a local job's segment looks like: Batch AI's layout with a local subscription, group and workspace
LOCAL_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
LOCAL_RESOURCE_GROUP = "local"
LOCAL_WORKSPACE = "local"
LOCAL_ACCOUNT_ENV = "AZURE_BATCHAI_STORAGE_ACCOUNT"
#: the caller's variables a local job gets (besides Batch AI's, its own and its secrets), as a Batch AI node had
#: them; ``PATH`` gets the venv's ``bin`` first (``python`` in a command line meant the container's Python), and
#: ``PYTHONPATH`` is the venv's too (azbai's own parallel driver runs inside a job)
BASE_ENVIRONMENT = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "PYTHONPATH",
)  # fmt: skip
#: names of further caller variables a background runner passes to its job (``azbai job create --env``)
PASSTHROUGH_ENV = "AZBAI_JOB_ENV"
#: marks a process started for a job before the job (a pipeline's pre-started fork server) with the job's work
#: directory, where :func:`stop_leftovers` finds it: its ``/proc`` environment is the one it was started with
JOB_WORK_ENV = "AZBAI_JOB_WORK"
#: what stage-out has to do, written before the job starts
STAGEOUT_FILE = "stageout.json"
STAGEOUT_FORMAT = 1
#: how a blob container is mounted: ``auto`` (FUSE where possible, else a mirror), ``fuse`` or ``mirror``
BLOB_MOUNT_ENV = "AZBAI_BLOB_MOUNT"
BLOB_MOUNT_MODES = ("auto", "fuse", "mirror")


def local_account(datastore: Datastore) -> str:
    """The local (Azurite) account a datastore lives in."""
    if datastore.workspace_default:
        return DEV_ACCOUNT
    if datastore.account_placeholder:
        return os.environ.get(LOCAL_ACCOUNT_ENV) or DEV_ACCOUNT
    return datastore.account_name


def open_datastore(workspace: Workspace, datastore: Datastore) -> Store:
    """The local store standing for a datastore."""
    account = local_account(datastore)
    container = "workspaceblobstore" if datastore.workspace_default else datastore.container_name
    if datastore.kind is StoreKind.FILE_SHARE:
        return open_store(workspace, account, share=container)
    return open_store(workspace, account, container=container)


def accounts_of(plan: Plan) -> list[str]:
    """The blob accounts a plan needs in the emulator."""
    return sorted({local_account(d) for d in plan.datastores if d.kind is StoreKind.BLOB_CONTAINER})


def job_environment(
    env: Mapping[str, str], passthrough: Iterable[str] = (), secrets: Iterable[str] = ()
) -> dict[str, str]:
    """A local job's base environment from the runner's ``env``: :data:`BASE_ENVIRONMENT`, ``LC_*``, the venv,
    the named ``passthrough`` variables and the job's ``secrets`` — nothing else the caller had."""
    keep = {*BASE_ENVIRONMENT, *passthrough, *secrets}
    chosen = {k: v for k, v in env.items() if k in keep or k.startswith("LC_")}
    interpreter = str(Path(sys.executable).parent)
    chosen["PATH"] = os.pathsep.join(p for p in (interpreter, env.get("PATH", os.defpath)) if p)
    if sys.prefix != sys.base_prefix:
        chosen["VIRTUAL_ENV"] = sys.prefix
    return chosen


@dataclass
class _Staged:
    """One data reference's local path and how to stage it out."""

    reference: DataReference
    store: Store
    path: Path
    prefix: str
    snapshot: dict[str, tuple[int, str]] | None = (
        None  # a blob mount's files before the job: path → (size, md5)
    )
    #: written through a mounted volume (nothing of its own to stage out)
    through_mount: bool = False
    #: a lazy (FUSE) mount: where the fetched and written files are, and the journal of removed listed paths
    cache: Path | None = None
    journal: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """The stage-out step as ``stageout.json`` keeps it."""
        action = "upload" if self.reference.mode is DataMode.UPLOAD else "write-back"
        if self.through_mount or (action == "write-back" and self.snapshot is None):
            action = "none"
        return {
            "reference": self.reference.name,
            "action": action,
            "kind": self.store.kind,
            "account": self.store.account,
            "store": self.store.name,
            "path": str(self.path),
            "prefix": self.prefix,
            "snapshot": {k: list(v) for k, v in (self.snapshot or {}).items()},
            "cache": str(self.cache) if self.cache is not None else None,
            "journal": str(self.journal) if self.journal is not None else None,
            "done": action == "none",
        }


class JobRunner:
    """Stages a job's data, runs the launcher, stages the results out and keeps the record up to date."""

    def __init__(
        self,
        workspace: Workspace,
        record: JobRecord,
        *,
        extra_refs: dict[str, Path] | None = None,
        params: dict[str, str] | None = None,
        extra_mounts: dict[str, Path] | None = None,
        commands: CommandPool | None = None,
    ) -> None:
        """``extra_refs`` gives paths for names that are not data references (a pipeline's data and data-path
        parameters), ``params`` the pipeline's string parameters, ``extra_mounts`` directories for volumes,
        ``commands`` the zygotes that may start a simple Python command warm (:mod:`azbai.local.warm`)."""
        self.workspace = workspace
        self.record = record
        self.plan = plan_from_dict(_read_json(record.path / "plan.json"))
        self.job: Job = job_from_json((record.path / "azbai_job.json").read_text(encoding="utf-8"))
        self.extra_refs = dict(extra_refs or {})
        self.params = dict(params or {})
        self.extra_mounts = dict(extra_mounts or {})
        self.commands = commands
        self._process: subprocess.Popen[bytes] | launcher.WarmChild | None = None
        self._terminated = threading.Event()
        self._mounts: list[blobfuse.LazyMount] = []
        self._blob_mount = "auto"

    @property
    def references(self) -> tuple[str, ...]:
        """The names of the data the job reads and writes (volumes, input and output directories)."""
        names = [v.data_reference for v in self.job.volumes]
        names += [d.data_reference for d in self.job.input_directories]
        names += [d.data_reference for d in self.job.output_directories]
        return tuple(dict.fromkeys(n for n in names if n))

    # -- the whole run ---------------------------------------------------------------------------------------------

    def run(self, env: dict[str, str] | None = None, *, passthrough: Iterable[str] = ()) -> int:
        """Run the job to its end; returns its exit code (and records it).

        ``env`` is the runner's environment (default ``os.environ``); the job gets only :func:`job_environment`
        of it (``passthrough`` names more of its variables to pass on).
        """
        record = self.record
        env = dict(os.environ if env is None else env)
        record.state, record.start_time, record.runner_pid = RUNNING, now(), os.getpid()
        record.runner_started = process_start(os.getpid())
        record.save()
        code = 1
        try:
            self._blob_mount = blob_mount_mode(env)
            if any(name not in self.extra_refs for name in self.references):
                Emulator(self.workspace).ensure(accounts=accounts_of(self.plan))
            staged = self._stage_in()
            self._record_locations(staged)
            write_stage_out(record, staged)
            code = self._launch(staged, job_environment(env, passthrough, (s.name for s in self.job.secrets)))
        except AzbaiError as exc:
            record.message = str(exc)
            log.error("%s", exc)
        finally:
            stop_leftovers(record)
            self._unmount()
            record.end_time, record.exit_code = now(), code
            record.save()
            record = finish_stage_out(self.workspace, record)
            if self._terminated.is_set():
                record.state = TERMINATED
                record.message = (
                    record.message or "terminated (azbai job terminate, or a signal to its runner)"
                )
            else:
                ok = code == 0 and not record.message and record.stage_out in (DONE, None)
                record.state = SUCCEEDED if ok else FAILED
            record.save()
            self.record = record
        return code if code or record.state == SUCCEEDED else 1

    def terminate(self) -> None:
        """Stop the launcher (it forwards to the job's processes); stage-out still runs."""
        self._terminated.set()
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)

    # -- staging ---------------------------------------------------------------------------------------------------

    def _stage_in(self) -> list[_Staged]:
        staged = []
        data_dir = self.record.work_dir / "azbai"
        for name in self.references:
            if name in self.extra_refs:
                continue
            ref = self.plan.data_reference(name)
            store = open_datastore(self.workspace, self.plan.datastore(ref.datastore))
            prefix = fill_segment(ref.path_on_datastore, self.record.segment).strip("/")
            through = self._through_mount(name)
            if through is not None:
                staged.append(_Staged(ref, store, through, prefix, through_mount=True))
            elif ref.mode is DataMode.MOUNT and store.kind == "share":
                path = self.workspace.share_dir(store.account, store.name) / prefix
                path.mkdir(parents=True, exist_ok=True)
                staged.append(_Staged(ref, store, path, prefix))
            elif ref.mode is DataMode.MOUNT and (lazy := self._lazy_mount(ref, store, prefix)) is not None:
                staged.append(lazy)
            elif ref.mode is DataMode.MOUNT:
                path = data_dir / "mounts" / name
                path.mkdir(parents=True, exist_ok=True)
                snapshot = {}
                if store.root_exists():
                    transfer.download(store, prefix, path, incremental=True)
                    snapshot = _mirror_snapshot(store, prefix, path)
                staged.append(_Staged(ref, store, path, prefix, snapshot))
            elif ref.mode is DataMode.DOWNLOAD:
                path = data_dir / "inputs" / name
                path.mkdir(parents=True, exist_ok=True)
                if store.root_exists():
                    transfer.download(store, prefix, path)
                staged.append(_Staged(ref, store, path, prefix))
            else:
                path = data_dir / "outputs" / name
                path.mkdir(parents=True, exist_ok=True)
                staged.append(_Staged(ref, store, path, prefix))
        return staged

    def _lazy_mount(self, ref: DataReference, store: Store, prefix: str) -> _Staged | None:
        """A blob container mounted with FUSE, or None where the mirror is to be used instead."""
        where = store.url_for(prefix)
        reason = "AZBAI_BLOB_MOUNT=mirror" if self._blob_mount == "mirror" else blobfuse.fuse_unavailable()
        if reason is None:
            data_dir = self.record.work_dir / "azbai"
            path = data_dir / "mounts" / ref.name
            cache = data_dir / "mount-cache" / ref.name
            mount = blobfuse.LazyMount(store, prefix, path, cache, cache.with_name(f"{ref.name}.removed"))
            try:
                mount.start()
            except blobfuse.FuseUnavailable as exc:
                reason = str(exc)
            else:
                self._mounts.append(mount)
                log.info(
                    "%s: %s is mounted with FUSE (files are fetched as they are opened)", ref.name, where
                )
                return _Staged(ref, store, path, prefix, mount.snapshot, cache=cache, journal=mount.journal)
        if self._blob_mount == "fuse":
            raise JobError(
                f"{ref.name}: {BLOB_MOUNT_ENV}=fuse, but a FUSE mount cannot be made here: {reason}"
            )
        log.info("%s: %s is mirrored before the job (no FUSE mount: %s)", ref.name, where, reason)
        return None

    def _unmount(self) -> None:
        """Unmount the lazy mounts (the job's processes are gone); stage-out reads their caches."""
        for mount in self._mounts:
            mount.stop()
            blobfuse.retire(mount.mountpoint, mount.cache)
        self._mounts.clear()

    def _through_mount(self, name: str) -> Path | None:
        """Batch AI's path of an output uploaded in the Azure ML form, when it lies on a volume the job mounts
        here: the job writes it through the mount, as on Batch AI."""
        outputs = [d for d in self.job.output_directories if d.data_reference == name]
        if len(outputs) != 1:
            return None
        output = outputs[0]
        scope = self._path_scope()
        path = launcher.compose_path(
            output.path_prefix,
            self.record.segment,
            ["outputs"] + ([output.path_suffix] if output.path_suffix else []),
            scope,
            self.record.work_dir,
        )
        for volume in self.job.volumes:
            if volume.data_reference is None or volume.data_reference in self.extra_refs:
                continue
            root = scope[
                "AZ_BATCHAI_JOB_MOUNT_ROOT" if volume.root is MountRoot.JOB else "AZ_BATCHAI_MOUNT_ROOT"
            ]
            mount = Path(root) / volume.relative_mount_path.strip("/")
            if path == mount or mount in path.parents:
                return path
        return None

    def _path_scope(self) -> dict[str, str]:
        """What Batch AI expanded in paths: its own variables and the job's environment variables."""
        layout = launcher.layout_variables(self.record.work_dir, self.job.name)
        job = {
            "environment_variables": [
                {"name": v.name, "value": v.value} for v in self.job.environment_variables
            ]
        }
        try:
            user = launcher.user_variables(job, self.params)
        except launcher.LauncherError:
            user = {}
        return {**layout, **user}

    def _record_locations(self, staged: list[_Staged]) -> None:
        by_ref = {item.reference.name: item for item in staged}
        scope, work, segment = self._path_scope(), self.record.work_dir, self.record.segment
        stdouterr = launcher.compose_path(
            self.job.std_out_err_path_prefix, segment, ["stdouterr"], scope, work
        )
        self.record.stdouterr_dir = str(stdouterr)
        for output in self.job.output_directories:
            item = by_ref.get(output.data_reference or "")
            if output.data_reference in self.extra_refs:
                self.record.outputs[output.id] = OutputLocation(str(self.extra_refs[output.data_reference]))
            elif item is not None:
                self.record.outputs[output.id] = OutputLocation(
                    str(item.path), item.store.kind, item.store.account, item.store.name, item.prefix
                )
            else:
                tail = ["outputs"] + ([output.path_suffix] if output.path_suffix else [])
                composed = launcher.compose_path(output.path_prefix, segment, tail, scope, work)
                self.record.outputs[output.id] = OutputLocation(str(composed))
        self.record.save()

    # -- the launcher ----------------------------------------------------------------------------------------------

    def _warm_launcher(
        self, address: str | None, argv: list[str], env: dict[str, str], log: int
    ) -> launcher.WarmChild | None:
        """The launcher forked by the zygote at ``address`` (its imports are the zygote's already), in this
        process's group as a child of it would be; None to start it as a child. Its parent is the zygote, so it
        watches the zygote's life (which ends with this process) instead of this process's."""
        zygote = self.commands.pid(address) if self.commands is not None and address else None
        try:
            cwd = os.getcwd()
        except OSError:  # a working directory removed under this process: only a child inherits that
            return None
        if address is None or zygote is None:
            return None
        args = argv[1:]
        args[args.index("--parent") + 1] = str(zygote)
        request = {
            "executable": sys.executable,
            "command": None,  # started as this process starts it, not through bash
            "args": args,
            "env": env,
            "cwd": cwd,
            "death_signal": int(signal.SIGTERM),
            "new_session": False,
        }
        return launcher.WarmChild.request(address, request, log, log)

    def _launch(self, staged: list[_Staged], env: dict[str, str]) -> int:
        argv = [
            sys.executable,
            launcher.__file__,
            "--job", str(self.record.path / "azbai_job.json"),
            "--segment", self.record.segment,
            "--work", str(self.record.work_dir),
            "--parent", str(os.getpid()),  # the job never runs unsupervised: it stops if this process dies
        ]  # fmt: skip
        for item in staged:
            argv += ["--ref", f"{item.reference.name}={item.path}"]
        for name in self.references:
            if name in self.extra_refs:
                argv += ["--ref", f"{name}={self.extra_refs[name]}"]
        for name, value in self.params.items():
            argv += ["--param", name, value]
        for volume_name, path in self.extra_mounts.items():
            argv += ["--mount", f"{volume_name}={path}"]
        for volume in self.job.volumes:
            if volume.name in self.extra_mounts:
                continue
            if volume.data_reference is None and (
                volume.root is MountRoot.CLUSTER or volume.kind is not VolumeKind.UNDESCRIBED
            ):
                # undescribed cluster mounts, NFS and unmanaged file systems: a local directory that persists
                directory = self.workspace.cluster_mount_dir(volume.relative_mount_path)
                directory.mkdir(parents=True, exist_ok=True)
                argv += ["--mount", f"{volume.name}={directory}"]
        address = None
        if self.commands is not None and not self.job.secrets:  # a zygote never holds a secret
            address = self.commands.address(env)
            if address is not None:
                argv += ["--warm", address]
        if self._terminated.is_set():
            return 128 + signal.SIGTERM
        log_path = self.record.path / "launcher.log"
        with open(log_path, "ab") as output:
            offset = output.tell()
            self._process = self._warm_launcher(address, argv, env, output.fileno())
            if self._process is None:
                try:
                    self._process = subprocess.Popen(
                        argv,
                        env=env,
                        stdout=output,
                        stderr=subprocess.STDOUT,
                    )
                except OSError as exc:
                    raise JobError(f"cannot start the launcher: {exc.strerror or exc}") from exc
            self.record.launcher_pid = self._process.pid
            self.record.launcher_started = process_start(self._process.pid)
            self.record.save()
            code = self._process.wait()
        reason = launcher_reason(code, log_path, offset, self.job.max_wall_clock_seconds)
        if reason:
            self.record.message = reason
        return code


# -- stage-out that survives its runner ---------------------------------------------------------------------------


def write_stage_out(record: JobRecord, staged: list[_Staged]) -> None:
    """Record what stage-out has to do (before the job starts), so that anyone can finish it."""
    save_record(record.path / STAGEOUT_FILE, {"items": [item.to_dict() for item in staged]}, STAGEOUT_FORMAT)
    record.stage_out, record.stage_out_error = PENDING, None
    record.save()


def finish_stage_out(workspace: Workspace, record: JobRecord) -> JobRecord:
    """Do what is left of a job's stage-out (all of it, or what failed last time); returns the saved record.

    Each store is opened afresh, so the emulator is found on its current port, or started, as for any other
    command. Serialised by a lock per job: two commands never stage out the same job at once.
    """
    from filelock import FileLock

    with FileLock(str(record.path / "stageout.lock")):
        record = JobRecord.load(record.path)
        path = record.path / STAGEOUT_FILE
        if record.stage_out not in (PENDING, STAGE_FAILED) or not path.exists():
            return record
        items = load_record(
            path, STAGEOUT_FORMAT, "stage-out list", JobError, lambda data: list(data["items"])
        )
        problems = stage_out_items(
            path,
            STAGEOUT_FORMAT,
            items,
            lambda item: _stage_out_item(workspace, item),
            lambda item: item["reference"],
        )
        record.stage_out = STAGE_FAILED if problems else DONE
        record.stage_out_error = "; ".join(problems) or None
        if not problems and record.state == FAILED and record.exit_code == 0 and not record.message:
            record.state = SUCCEEDED  # the job itself succeeded; now its outputs are in storage too
        record.save()
        return record


def stage_out_items(
    path: Path,
    version: int,
    items: list[dict[str, Any]],
    stage: Callable[[dict[str, Any]], None],
    describe: Callable[[dict[str, Any]], str],
) -> list[str]:
    """Stage out every item of a recorded stage-out plan (``path``, format ``version``) not done yet; the problems.

    Each item is marked done in the plan as soon as it is in storage, so a stage-out cut short is finished, not
    redone. Every item is tried; a problem is named by ``describe``. Local jobs' and ``azbai ml`` runs' plans alike.
    """
    problems = []
    for item in items:
        if item["done"]:
            continue
        try:
            stage(item)
            item["done"] = True
        except AzbaiError as exc:
            problems.append(f"{describe(item)}: {exc}")
            log.error("stage-out of %s failed: %s", describe(item), exc)
        save_record(path, {"items": items}, version)
    return problems


def _stage_out_item(workspace: Workspace, item: dict[str, Any]) -> None:
    if item["action"] == "none":
        return
    if item.get("cache"):
        # a lazy mount is retired before the store is opened: its path shows the job's files while storage is down
        blobfuse.retire(Path(item["path"]), Path(item["cache"]))
    kind = {"container": item["store"]} if item["kind"] == "blob" else {"share": item["store"]}
    store = open_store(workspace, item["account"], **kind)
    local, prefix = Path(item["path"]), item["prefix"]
    before = {k: (int(v[0]), str(v[1])) for k, v in item["snapshot"].items()}
    if item.get("cache"):
        uploaded, deleted = blobfuse.write_back(store, prefix, Path(item["cache"]), before, item["journal"])
        log.info("%s: wrote back %d file(s), deleted %d", item["reference"], uploaded, deleted)
        return
    if not local.is_dir():
        raise StorageError(f"{local} is gone: its files cannot be staged out")
    if item["action"] == "upload":
        transfer.upload(local, store, prefix, incremental=True)
        return
    after = _local_files(local)
    changed = [rel for rel, facts in after.items() if before.get(rel) != facts]
    for rel in changed:
        store.upload_file(local / rel, posixpath.join(prefix, rel) if prefix else rel)
    for rel in before.keys() - after.keys():
        store.delete(posixpath.join(prefix, rel) if prefix else rel, missing_ok=True)
    store.flush()
    log.info("%s: wrote back %d file(s)", item["reference"], len(changed))


def blob_mount_mode(env: Mapping[str, str]) -> str:
    """How blob containers are mounted (:data:`BLOB_MOUNT_ENV`): ``auto``, ``fuse`` or ``mirror``."""
    value = env.get(BLOB_MOUNT_ENV, "").strip().lower() or "auto"
    if value not in BLOB_MOUNT_MODES:
        raise JobError(
            f"{BLOB_MOUNT_ENV}={env[BLOB_MOUNT_ENV]!r} is not a blob mount mode: expected one of "
            + ", ".join(BLOB_MOUNT_MODES)
        )
    return value


def recover_job(record: JobRecord) -> JobRecord:
    """A job whose runner is gone: stop what it left running, say why, and finish its stage-out."""
    from filelock import FileLock

    workspace = Workspace(record.path.parents[2])
    with FileLock(str(record.path / "recover.lock")):
        record = JobRecord.load(record.path)
        if record.state in (QUEUED, RUNNING) and record.runner_pid and not record.runner_alive:
            stopped = stop_leftovers(record)
            blobfuse.detach_under(record.work_dir)  # its lazy mounts died with it (ENOTCONN)
            record.state, record.end_time = FAILED, now()
            record.message = (
                f"the job's runner (pid {record.runner_pid}) died while the job ran; {stopped} process(es) it "
                "left were stopped and what the job wrote so far is staged out"
            )
            record.save()
    if record.stranded:
        record = finish_stage_out(workspace, record)
    return record


def stop_leftovers(record: JobRecord, grace: float | None = None) -> int:
    """Stop the job's launcher (it stops its processes) and any process of the job still running (one whose
    environment is this job's: ``$AZ_BATCHAI_JOB_MOUNT_ROOT`` under its work directory — never, say, a shell
    that merely sits in that directory, or :data:`JOB_WORK_ENV` naming it); returns how many were stopped."""
    import psutil

    grace = launcher.GRACE_SECONDS + 5 if grace is None else grace
    victims = []
    if record.launcher_pid and process_start(record.launcher_pid) == record.launcher_started:
        with contextlib.suppress(psutil.Error):
            victims.append(psutil.Process(record.launcher_pid))
    work = str(record.work_dir) + os.sep

    def of_this_job(environ: Mapping[str, str]) -> bool:
        marks = (environ.get("AZ_BATCHAI_JOB_MOUNT_ROOT", ""), environ.get(JOB_WORK_ENV, "") + os.sep)
        return any(mark.startswith(work) for mark in marks)

    victims += [p for p in by_environment(of_this_job) if all(v.pid != p.pid for v in victims)]
    with contextlib.suppress(psutil.Error):
        stop_processes(victims, grace)
    return len(victims)


def launcher_reason(code: int, log_path: Path, offset: int, wall: int | None) -> str | None:
    """Why the launcher ended the job, from its exit code and what it wrote to ``launcher.log``."""
    if code == launcher.EXIT_TIMEOUT and wall:
        return f"maxWallClockTime ({wall} s) exceeded: the job's processes were stopped (exit code {code})"
    if code == 0:
        return None
    try:
        with open(log_path, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    errors: list[str] = []
    for line in text.splitlines():
        if line.startswith("Error: "):
            errors.append(line[len("Error: ") :])
        elif errors and line.startswith("  "):
            errors.append(line.strip())
    if errors:
        return "the launcher could not run the job: " + " ".join(e.strip() for e in errors)[:2000]
    if code == launcher.EXIT_LAUNCHER_ERROR:
        return f"the launcher failed (exit code {code}); see {log_path}"
    return None


def run_recorded(directory: Path) -> int:
    """The background runner's body: run the job recorded in ``directory``."""
    record = JobRecord.load(directory)
    workspace = Workspace(Path(record.directory).parents[2])
    logging.basicConfig(
        filename=directory / "runner.log",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    runner = JobRunner(workspace, record)
    signal.signal(signal.SIGTERM, lambda signum, frame: runner.terminate())
    signal.signal(signal.SIGINT, lambda signum, frame: runner.terminate())
    passthrough = [n for n in os.environ.get(PASSTHROUGH_ENV, "").split(",") if n]
    try:
        return runner.run(env=dict(os.environ), passthrough=passthrough)
    except Exception:  # the runner is a detached process: nothing else would see this
        log.exception("the runner failed")
        record = JobRecord.load(directory)
        record.state, record.end_time, record.message = FAILED, now(), "the runner failed; see runner.log"
        record.save()
        return 1


def _mirror_snapshot(store: Store, prefix: str, mirror: Path) -> dict[str, tuple[int, str]]:
    """What a freshly downloaded (and verified) mirror holds, from the store's listing: no second hashing pass.

    Only a blob whose MD5 the store does not know is hashed locally.
    """
    base = f"{prefix}/" if prefix else ""
    snapshot = {}
    for entry in store.list(base):
        rel = entry.path[len(base) :]
        snapshot[rel] = (entry.size, entry.md5 or file_md5(mirror / rel))
    return snapshot


def _local_files(root: Path) -> dict[str, tuple[int, str]]:
    return {rel: (path.stat().st_size, file_md5(path)) for path, rel in iter_local_files(root)}


def _read_json(path: Path) -> Any:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JobError(f"cannot read {path}: {exc}") from exc


def remove_tree(path: Path) -> None:
    """Delete a directory tree, links as links (a job's work directory links into shares: never follow them).

    Lazy mounts under it are detached first: a dead one would fail the walk, a live one would be emptied."""
    blobfuse.detach_under(path)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


if __name__ == "__main__":
    sys.exit(run_recorded(Path(sys.argv[1]).resolve()))
