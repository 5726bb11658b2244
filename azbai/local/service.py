"""``azbai job …`` as a library: create, show, list, wait, terminate, delete a local job, and read its files.

>>> record = create_job(Workspace.resolve(), azbai.load("job.json"), name="mnist", wait=True)
>>> record.state, record.exit_code
('succeeded', 0)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from azbai.errors import JobError, JobFailed, StorageError
from azbai.local.jobs import PENDING, STAGE_FAILED, JobBook, JobRecord, check_name
from azbai.local.runner import (
    LOCAL_RESOURCE_GROUP,
    LOCAL_SUBSCRIPTION,
    LOCAL_WORKSPACE,
    PASSTHROUGH_ENV,
    JobRunner,
    recover_job,
    remove_tree,
)
from azbai.local.stores import open_store
from azbai.local.workspace import Workspace
from azbai.plan.model import LOCAL_MAX_NODES, LOCAL_MAX_PROCESSES, SEGMENT_TEMPLATE, Job, Plan
from azbai.plan.serialize import job_to_json, plan_to_json

STDOUTERR = "stdouterr"


def create_job(
    workspace: Workspace,
    plan: Plan,
    *,
    name: str | None = None,
    experiment: str | None = None,
    wait: bool = False,
    secrets: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    segment: str | None = None,
) -> JobRecord:
    """Create a local job from a single-job plan and start it (in the background unless ``wait``).

    ``name`` and ``experiment`` default to the plan's. ``secrets`` are the values of the job's secrets (never
    written anywhere); a secret missing from it is taken from the caller's environment variable of that name.
    The job's environment is Batch AI's (its variables, ``environmentVariables``, ``secrets`` and a small base,
    :data:`~azbai.local.runner.BASE_ENVIRONMENT`); ``env`` adds variables of the caller's choosing. ``segment``
    replaces the job's output path segment (``azbai az`` names its own group, workspace and experiment in it).
    With ``wait`` the call returns when the job ends; a failed job raises :class:`JobFailed` (its record is kept).
    """
    if len(plan.steps) != 1 or not plan.job_steps:
        raise JobError(f"{plan.name!r} is a pipeline: run it as a pipeline (azbai pipeline run)")
    name = check_name(name or plan.name)
    experiment = experiment or plan.experiment
    job = plan.job_steps[0].job
    check_local_size(job)
    values = secret_environment(job, secrets or {})
    book = JobBook(workspace.ensure())
    record = book.create(experiment, name)
    record.segment = segment or SEGMENT_TEMPLATE.format(
        subscription=LOCAL_SUBSCRIPTION,
        resource_group=LOCAL_RESOURCE_GROUP,
        workspace=LOCAL_WORKSPACE,
        experiment=experiment,
        job=name,
        job_uuid=str(uuid.uuid4()),
    )
    record.tool_type = job.launch.toolkit
    record.node_count = job.node_count
    record.source = plan.source.file
    (record.path / "plan.json").write_text(plan_to_json(plan), encoding="utf-8")
    (record.path / "azbai_job.json").write_text(job_to_json(job), encoding="utf-8")
    record.save()
    passthrough = sorted(env or {})
    runner_env = {
        **os.environ,
        **(env or {}),
        **values,
        "AZBAI_WORKSPACE": str(workspace.root),
        PASSTHROUGH_ENV: ",".join(passthrough),
    }
    if wait:
        runner = JobRunner(workspace, record)
        # Ctrl-C stops the job (its logs and outputs are still staged out); handlers belong to the main thread only
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, lambda signum, frame: runner.terminate()) if main else None
        try:
            code = runner.run(env=runner_env, passthrough=passthrough)
        finally:
            if main:
                signal.signal(signal.SIGINT, previous)
        record = record.refresh()
        if code != 0 or record.state != "succeeded":
            raise JobFailed(_failure(record), record.exit_code or 1)
        return record
    with open(record.path / "runner.log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "azbai.local.runner", str(record.path)],
            env=runner_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the job outlives the CLI that created it
        )
    # the runner records itself (pid and start time) when it starts: saving here could overwrite its progress
    record.runner_pid = process.pid
    return record


def check_local_size(job: Job) -> None:
    """:class:`JobError` for a job larger than one machine can simulate (``nodeCount`` 10⁹ is not a local job)."""
    launch = job.launch
    if launch.node_count > LOCAL_MAX_NODES or launch.process_count > LOCAL_MAX_PROCESSES:
        raise JobError(
            f"the job asks for {launch.process_count} process(es) on {launch.node_count} node(s); a local job "
            f"simulates at most {LOCAL_MAX_NODES} nodes and {LOCAL_MAX_PROCESSES} processes on this machine"
        )


def secret_environment(job: Job, given: Mapping[str, str]) -> dict[str, str]:
    """The job's secrets as environment variables for its runner (never written anywhere).

    A value comes from ``given`` (job.json's inline values, read by the façade), else from the caller's
    environment; a secret kept in Key Vault cannot be read locally, so its value must be in one of them.
    """
    values: dict[str, str] = {}
    missing = []
    for secret in job.secrets:
        if secret.name in given:
            values[secret.name] = given[secret.name]
        elif secret.name in os.environ:
            values[secret.name] = os.environ[secret.name]
        else:
            missing.append(secret.name)
    if missing:
        raise JobError(
            f"secret(s) {', '.join(missing)} have no value here (a Key Vault secret cannot be read locally): "
            "set them as environment variables of the same name"
        )
    return values


def wait_job(record: JobRecord, *, timeout: float | None = None, poll: float = 0.5) -> JobRecord:
    """Wait until the job ends; :class:`JobFailed` when it failed or was terminated."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        record = record.refresh()
        if record.finished:
            break
        if deadline is not None and time.monotonic() > deadline:
            raise JobError(f"job {record.name!r} is still {record.state} after {timeout:g} s")
        time.sleep(poll)
    if record.state != "succeeded":
        raise JobFailed(_failure(record), record.exit_code or 1)
    return record


def terminate_job(record: JobRecord, *, timeout: float = 60.0) -> JobRecord:
    """Stop a running job (its logs and partial outputs are staged out first) and wait for its end."""
    record = record.refresh()
    if record.finished:
        return record
    if record.runner_pid is None:
        raise JobError(f"job {record.name!r} has no runner to stop")
    if not record.runner_alive:
        return recover_job(record)
    try:
        os.kill(record.runner_pid, signal.SIGTERM)
    except ProcessLookupError:
        return record.refresh()
    deadline = time.monotonic() + timeout
    while not record.finished and time.monotonic() < deadline:
        time.sleep(0.2)
        record = record.refresh()
    if not record.finished:
        raise JobError(f"job {record.name!r} did not stop within {timeout:g} s")
    return record


def delete_job(record: JobRecord, *, force: bool = False) -> None:
    """Forget a finished job: its record and work directory (outputs on shares and containers stay).

    A job whose outputs are not all in storage (its stage-out failed, and retrying it failed again) is kept
    unless ``force``: its work directory holds the only copy.
    """
    record = record.refresh()
    if not record.finished:
        raise JobError(
            f"job {record.name!r} is {record.state}: terminate it first (azbai job terminate -n {record.name})"
        )
    if record.stage_out in (PENDING, STAGE_FAILED) and not force:
        why = record.stage_out_error or "its stage-out did not finish"
        raise JobError(
            f"job {record.name!r} has outputs that are not in storage yet ({why}); its work directory "
            f"{record.work_dir} holds the only copy. Start the storage "
            f"(azbai storage start) and look at the job again (azbai job show -n {record.name}) to stage them "
            "out, or delete it anyway with --force"
        )
    remove_tree(record.path)


@dataclass(frozen=True)
class JobFile:
    """A file of a job's stdout/stderr directory or of an output directory."""

    name: str
    size: int
    url: str


def list_files(record: JobRecord, directory: str = STDOUTERR) -> list[JobFile]:
    """The files of ``stdouterr`` or of an output directory (by id), as ``az batchai job file list`` showed them."""
    record = record.refresh()
    if directory.lower() == STDOUTERR:
        return _local_listing(_stdouterr_dir(record))
    location = record.outputs.get(directory)
    if location is None:
        known = ", ".join([STDOUTERR, *record.outputs]) or STDOUTERR
        raise JobError(f"job {record.name!r} has no output directory {directory!r} (known: {known})")
    if record.finished and record.stage_out in (PENDING, STAGE_FAILED):
        return _local_listing(Path(location.local))  # not in storage yet: the only copy is the local one
    if record.finished and location.store_kind and location.account and location.store:
        workspace = Workspace(record.path.parents[2])
        kind = {"container": location.store} if location.store_kind == "blob" else {"share": location.store}
        store = open_store(workspace, location.account, **kind)
        prefix = (location.prefix or "").strip("/")
        try:
            entries = store.list(prefix + "/" if prefix else "")
        except StorageError:
            entries = []
        return [JobFile(e.path[len(prefix) :].lstrip("/"), e.size, store.url_for(e.path)) for e in entries]
    return _local_listing(Path(location.local))


def stream_file(
    record: JobRecord, name: str, directory: str = STDOUTERR, *, follow: bool = True, poll: float = 0.25
) -> Iterator[bytes]:
    """The content of a job file, following it while the job runs (``az batchai job file stream``)."""
    if "/" in name or name in ("", ".", ".."):
        raise JobError(f"{name!r}: give a file name of the directory (azbai job file list shows them)")
    position = 0
    while True:
        record = record.refresh()
        base = _directory(record, directory, required=not follow or record.finished)
        path = base / name if base is not None else None
        if path is not None and path.is_file():
            with open(path, "rb") as stream:
                stream.seek(position)
                chunk = stream.read()
            if chunk:
                position += len(chunk)
                yield chunk
                continue
        if not follow or record.finished:
            if path is None or not path.is_file():
                listing = ", ".join(f.name for f in _local_listing(base)) if base else ""
                raise JobError(
                    f"job {record.name!r} has no file {name!r} in {directory} (files: {listing or 'none yet'})"
                )
            return
        time.sleep(poll)


def _directory(record: JobRecord, directory: str, *, required: bool) -> Path | None:
    """The local directory of ``stdouterr`` or an output id; None while a running job has not set it up."""
    if directory.lower() == STDOUTERR:
        if record.stdouterr_dir is None and not required:
            return None
        return _stdouterr_dir(record)
    location = record.outputs.get(directory)
    if location is None:
        if not required and not record.outputs:
            return None
        raise JobError(f"job {record.name!r} has no output directory {directory!r}")
    return Path(location.local)


def _stdouterr_dir(record: JobRecord) -> Path:
    if record.stdouterr_dir is None:
        raise JobError(f"job {record.name!r} has not started yet: it has no stdout/stderr directory")
    return Path(record.stdouterr_dir)


def _local_listing(directory: Path) -> list[JobFile]:
    if not directory.is_dir():
        return []
    files = []
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            files.append(
                JobFile(str(path.relative_to(directory)), path.stat().st_size, path.resolve().as_uri())
            )
    return files


def _failure(record: JobRecord) -> str:
    what = f"job {record.name!r} {record.state}"
    if record.exit_code is not None:
        what += f" with exit code {record.exit_code}"
    if record.errors:
        what += ": " + "; ".join(record.errors)
    return what + f"; logs: azbai job file list -n {record.name} -e {record.experiment}"
