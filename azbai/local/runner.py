"""Run a plan's job on the embedded default: Azurite and local directories for the data, the launcher for the job.

The runner gives every data reference of the step a local path, the way Azure ML does on a compute node:

=========  ===================================  =====================================================================
mode       Azure File share                     blob container
=========  ===================================  =====================================================================
mount      the share's directory itself: reads  a per-job mirror of the container path: downloaded before the job,
           and writes are the share's at once   changed, new and deleted files written back when the job ends
download   a copy made before the job           a verified download made before the job
upload     an empty directory, uploaded after   an empty directory, uploaded (MD5-verified) after the job
=========  ===================================  =====================================================================

A blob "mount" differs from blobfuse in one way a job can notice: other processes see the job's writes when the
job ends, not when each file is closed. Stage-out (write-back and uploads) runs after a failed or terminated job
too, so partial outputs and logs are kept; a job whose stage-out fails is reported failed, never succeeded.

``python -m azbai.local.runner JOB_DIR`` runs a recorded job (``azbai job create`` starts it in the background
this way); secrets reach it through its environment only.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azbai import launcher
from azbai.errors import AzbaiError, JobError, StorageError
from azbai.local import transfer
from azbai.local.azurite import DEV_ACCOUNT, Emulator
from azbai.local.jobs import (
    FAILED,
    RUNNING,
    SUCCEEDED,
    TERMINATED,
    JobRecord,
    OutputLocation,
    now,
    process_start,
)
from azbai.local.stores import AZBAI_FILE_PREFIX, Store, file_md5, iter_local_files, open_store
from azbai.local.workspace import Workspace
from azbai.plan.model import DataMode, DataReference, Datastore, Job, MountRoot, Plan, StoreKind, VolumeKind
from azbai.plan.serialize import job_from_json, plan_from_dict

log = logging.getLogger(__name__)

#: what a local job's segment looks like: Batch AI's layout with a local subscription, group and workspace
LOCAL_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
LOCAL_RESOURCE_GROUP = "local"
LOCAL_WORKSPACE = "local"
LOCAL_ACCOUNT_ENV = "AZURE_BATCHAI_STORAGE_ACCOUNT"


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
    ) -> None:
        """``extra_refs`` gives paths for names that are not data references (a pipeline's data and data-path
        parameters), ``params`` the pipeline's string parameters, ``extra_mounts`` directories for volumes."""
        self.workspace = workspace
        self.record = record
        self.plan = plan_from_dict(_read_json(record.path / "plan.json"))
        self.job: Job = job_from_json((record.path / "azbai_job.json").read_text(encoding="utf-8"))
        self.extra_refs = dict(extra_refs or {})
        self.params = dict(params or {})
        self.extra_mounts = dict(extra_mounts or {})
        self._process: subprocess.Popen[bytes] | None = None
        self._terminated = threading.Event()

    @property
    def references(self) -> tuple[str, ...]:
        """The names of the data the job reads and writes (volumes, input and output directories)."""
        names = [v.data_reference for v in self.job.volumes]
        names += [d.data_reference for d in self.job.input_directories]
        names += [d.data_reference for d in self.job.output_directories]
        return tuple(dict.fromkeys(n for n in names if n))

    # -- the whole run ---------------------------------------------------------------------------------------------

    def run(self, env: dict[str, str] | None = None) -> int:
        """Run the job to its end; returns its exit code (and records it)."""
        record = self.record
        record.state, record.start_time, record.runner_pid = RUNNING, now(), os.getpid()
        record.runner_started = process_start(os.getpid())
        record.save()
        staged: list[_Staged] = []
        code = 1
        try:
            if any(name not in self.extra_refs for name in self.references):
                Emulator(self.workspace).ensure(accounts=accounts_of(self.plan))
            staged = self._stage_in()
            self._record_locations(staged)
            code = self._launch(staged, env)
        except AzbaiError as exc:
            record.message = str(exc)
            log.error("%s", exc)
        finally:
            try:
                self._stage_out(staged)
            except AzbaiError as exc:
                record.message = f"{record.message + '; ' if record.message else ''}stage-out failed: {exc}"
                log.error("stage-out failed: %s", exc)
                code = code or 1
            record.end_time, record.exit_code = now(), code
            if self._terminated.is_set():
                record.state = TERMINATED
            else:
                record.state = SUCCEEDED if code == 0 and not record.message else FAILED
            record.save()
        return code

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
            prefix = ref.path_on_datastore.replace("{segment}", self.record.segment).strip("/")
            if ref.mode is DataMode.MOUNT and store.kind == "share":
                path = self.workspace.share_dir(store.account, store.name) / prefix
                path.mkdir(parents=True, exist_ok=True)
                staged.append(_Staged(ref, store, path, prefix))
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

    def _stage_out(self, staged: list[_Staged]) -> None:
        problems = []
        for item in staged:
            try:
                if item.reference.mode is DataMode.UPLOAD:
                    transfer.upload(item.path, item.store, item.prefix)
                elif item.snapshot is not None:
                    self._write_back(item)
            except AzbaiError as exc:
                problems.append(f"{item.reference.name}: {exc}")
        if problems:
            raise StorageError("; ".join(problems))

    def _write_back(self, item: _Staged) -> None:
        """Send a blob mount's changes back: new and changed files uploaded, deleted files deleted."""
        assert item.snapshot is not None
        after = _local_files(item.path)
        changed = [rel for rel, facts in after.items() if item.snapshot.get(rel) != facts]
        for rel in changed:
            item.store.upload_file(item.path / rel, posixpath.join(item.prefix, rel) if item.prefix else rel)
        for rel in item.snapshot.keys() - after.keys():
            item.store.delete(posixpath.join(item.prefix, rel) if item.prefix else rel, missing_ok=True)
        log.info("%s: wrote back %d file(s)", item.reference.name, len(changed))

    def _record_locations(self, staged: list[_Staged]) -> None:
        by_ref = {item.reference.name: item for item in staged}
        layout_env = {
            "AZ_BATCHAI_MOUNT_ROOT": str(self.record.work_dir / "mounts"),
            "AZ_BATCHAI_JOB_MOUNT_ROOT": str(self.record.work_dir / "jobs" / self.job.name / "mounts"),
        }
        prefix = launcher.expand(self.job.std_out_err_path_prefix, layout_env)
        self.record.stdouterr_dir = str(Path(prefix) / self.record.segment / "stdouterr")
        for output in self.job.output_directories:
            item = by_ref.get(output.data_reference or "")
            if output.data_reference in self.extra_refs:
                self.record.outputs[output.id] = OutputLocation(str(self.extra_refs[output.data_reference]))
            elif item is not None:
                self.record.outputs[output.id] = OutputLocation(
                    str(item.path), item.store.kind, item.store.account, item.store.name, item.prefix
                )
            else:
                composed = (
                    Path(launcher.expand(output.path_prefix, layout_env)) / self.record.segment / "outputs"
                )
                self.record.outputs[output.id] = OutputLocation(str(composed / (output.path_suffix or "")))
        self.record.save()

    # -- the launcher ----------------------------------------------------------------------------------------------

    def _launch(self, staged: list[_Staged], env: dict[str, str] | None) -> int:
        argv = [
            sys.executable,
            launcher.__file__,
            "--job", str(self.record.path / "azbai_job.json"),
            "--segment", self.record.segment,
            "--work", str(self.record.work_dir),
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
        if self._terminated.is_set():
            return 128 + signal.SIGTERM
        # `python` in a Batch AI command line meant the container's Python; locally it is the one running azbai
        environment = dict(os.environ if env is None else env)
        interpreter = str(Path(sys.executable).parent)
        environment["PATH"] = os.pathsep.join([interpreter, environment.get("PATH", "")])
        with open(self.record.path / "launcher.log", "ab") as output:
            self._process = subprocess.Popen(argv, env=environment, stdout=output, stderr=subprocess.STDOUT)
            return self._process.wait()


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
    try:
        return runner.run(env=dict(os.environ))
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
    files = {}
    for path, rel in iter_local_files(root):
        if not Path(rel).name.startswith(AZBAI_FILE_PREFIX):
            files[rel] = (path.stat().st_size, file_md5(path))
    return files


def _read_json(path: Path) -> Any:
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JobError(f"cannot read {path}: {exc}") from exc


def remove_tree(path: Path) -> None:
    """Delete a directory tree, links as links (a job's work directory links into shares: never follow them)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


if __name__ == "__main__":
    sys.exit(run_recorded(Path(sys.argv[1]).resolve()))
