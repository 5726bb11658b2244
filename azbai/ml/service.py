"""``azbai ml job create|show|list|stream|download|cancel``: the CLI v2's job commands on the embedded default.

:func:`create_job` reads the file with azure-ai-ml's ``load_job`` (``--set`` as ``params_override``), checks the
computes and datastores it names, records the run, and runs it in the background (``python -m azbai.ml.service
RUN_DIR``) or, with ``wait``, in this process. The file is read again by the runner: what runs is the file.

Nothing a job wrote is lost when its runner dies (SIGKILL, a crash, a reboot): the runner records each run's
stage-out plan before the job's processes start (:func:`azbai.ml.data.write_stage_out`), and every command that
looks at a run (``job show``, ``list``, ``stream``, ``download``, ``cancel``, waiting) first calls
:func:`recover_run`, which stops the job's leftover processes, detaches its mounts, finishes the stage-out (once,
under a lock) and reports the run Failed with a reason naming the dead runner. A stage-out that fails is recorded
(``stage_out`` Failed, ``stage_out_error``, and said in the run's message) and retried by the next look; a run is
never Completed with outputs missing, and one whose job succeeded is Completed once a retried stage-out has put
its outputs in storage.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from azbai.errors import MlError, MlJobFailed
from azbai.local import transfer
from azbai.local.azurite import Emulator
from azbai.local.workspace import Workspace
from azbai.ml import loaders
from azbai.ml.command import Engine, command_spec
from azbai.ml.data import detach_mounts, finish_stage_out
from azbai.ml.pipeline import PipelineRun, Progress
from azbai.ml.processes import stop_leftovers
from azbai.ml.runs import (
    CANCELED,
    COMPLETED,
    FAILED,
    FINISHED,
    STAGE_FAILED,
    STAGE_PENDING,
    RunBook,
    RunRecord,
    now,
)

log = logging.getLogger(__name__)


def create_job(
    workspace: Workspace,
    file: str | os.PathLike[str],
    *,
    sets: Mapping[str, str] | None = None,
    name: str | None = None,
    wait: bool = False,
    env: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> RunRecord:
    """``az ml job create -f FILE``: a command or pipeline job, run locally. ``wait``: here, to its end."""
    path = Path(file).resolve()
    job = loaders.load_job(path, sets)
    if job.type not in ("command", "pipeline"):
        raise MlError(f"{path}: job type {job.type!r} cannot run locally (command, pipeline)")
    engine = Engine(workspace, env)
    book = RunBook(workspace)
    if job.type == "command":
        spec = command_spec(job, "job")
        engine.check_compute(spec)
        engine.check_data(spec)
    else:  # every node's compute and data, before anything is recorded or runs
        default = job.settings.default_compute if job.settings else None
        for node in PipelineRun(engine, book, job, RunRecord("check", "")).specs().values():
            engine.check_compute(node, default)
            engine.check_data(node)
    accounts = {d.account for d in engine.registry.datastores() if d.type == "azure_blob"}
    Emulator(workspace.ensure()).ensure(accounts=sorted(accounts))
    record = book.create(
        name or job.name,
        type=job.type,
        display_name=job.display_name,
        experiment=job.experiment_name or "Default",
        file=str(path),
        sets=dict(sets or {}),
        compute=str(job.compute or ""),
    )
    if not wait:
        with open(record.path / "runner.log", "ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "azbai.ml.service", record.directory],
                env={**os.environ, **(env or {}), "AZBAI_WORKSPACE": str(workspace.root)},
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        record.set_runner(process.pid)
        record.save()
        return record
    code = _run(engine, book, job, record, progress)
    record = RunRecord.load(record.path)
    if code != 0 or record.status != COMPLETED:
        raise MlJobFailed(
            f"job {record.name} {record.status.lower()}: {record.message or f'exit code {code}'}", code or 1
        )
    return record


def _run(engine: Engine, book: RunBook, job: object, record: RunRecord, progress: Progress | None) -> int:
    main = threading.current_thread() is threading.main_thread()
    previous = {}
    if main:
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda s, f: engine.cancel())
    try:
        if getattr(job, "type", None) == "pipeline":
            return PipelineRun(engine, book, job, record).run(progress)
        return engine.execute(command_spec(job, record.display_name or record.name), record)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_recorded(directory: Path) -> int:
    """The background runner: run the job recorded in ``directory`` from its file and ``--set`` values."""
    record = RunRecord.load(directory)
    workspace = Workspace(directory.parents[2])
    logging.basicConfig(filename=directory / "runner.log", level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    try:
        job = loaders.load_job(Path(record.file), record.sets)
        return _run(Engine(workspace), RunBook(workspace), job, record, None)
    except Exception as exc:  # a detached process: nothing else would see this
        log.exception("the runner failed")
        record = RunRecord.load(directory)
        record.status, record.end_time, record.message = FAILED, now(), f"the runner failed: {exc}"
        record.save()
        return 1


def show_job(workspace: Workspace, name: str) -> RunRecord:
    """``az ml job show -n NAME``, after :func:`recover_run`: a run whose runner died is not left running."""
    return recover_run(workspace, RunBook(workspace).get(name))


def recover_run(workspace: Workspace, record: RunRecord) -> RunRecord:
    """A run whose runner is gone: stop what its job left running, detach the lazy mounts it served (they died
    with it and answer ``ENOTCONN``), say why it failed, and finish its recorded stage-out, so what the job wrote
    before the runner died is in storage; a pipeline's started nodes each the same way. A stage-out that failed
    (say, storage unreachable) is retried by each look until it succeeds. Returns the record as saved.

    Serialised by a lock per run, so two commands looking at once recover (and stage out) a run once.
    """
    from filelock import FileLock

    dead = record.status not in FINISHED and bool(record.pid) and not record.runner_alive
    for child in record.children.values():  # a pipeline's nodes, which ran in its runner: theirs first
        node = RunRecord.load(RunBook(workspace).root / child)
        if dead and node.pid is None and node.status not in FINISHED:
            # created, not yet started, when the runner died: it is that runner's to report
            node.pid, node.pid_started = record.pid, record.pid_started
            node.save()
        recover_run(workspace, node)  # also retries a node's failed stage-out
    if dead:
        with FileLock(str(record.path / "recover.lock")):
            record = RunRecord.load(record.path)
            if record.status not in FINISHED and not record.runner_alive:
                stopped = stop_leftovers(workspace.root, [record.name])
                detach_mounts(record.path)
                what = "the pipeline" if record.children else "the job"
                record.status, record.end_time = FAILED, now()
                record.message = (
                    f"{what}'s runner (pid {record.pid}) died while {what} ran"
                    + (f"; {stopped} process(es) it left were stopped" if stopped else "")
                    + ("" if record.stage_out is None else "; what the job wrote so far is staged out")
                    + (f" (the runner's log: {record.path / 'runner.log'})" if record.parent is None else "")
                )
                record.save()
                log.warning("job %s: %s", record.name, record.message)
    if record.stage_out in (STAGE_PENDING, STAGE_FAILED) and (
        record.status in FINISHED or not record.runner_alive
    ):
        record = finish_stage_out(workspace, record)
    return record


def list_jobs(workspace: Workspace) -> list[RunRecord]:
    """``az ml job list``: jobs and pipelines, not pipeline nodes, each after :func:`recover_run`."""
    return [recover_run(workspace, record) for record in RunBook(workspace).list()]


def wait_job(workspace: Workspace, name: str, timeout: float | None = None) -> RunRecord:
    """Wait for a job to end; :class:`MlJobFailed` if it did not complete."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        record = show_job(workspace, name)
        if record.status in FINISHED:
            break
        if deadline is not None and time.monotonic() > deadline:
            raise MlError(f"job {name} did not end within {timeout} s")
        time.sleep(0.2)
    if record.status != COMPLETED:
        raise MlJobFailed(f"job {name} {record.status.lower()}: {record.message}", record.exit_code or 1)
    return record


def log_files(workspace: Workspace, name: str) -> list[Path]:
    """A job's ``user_logs`` files (a pipeline's: each node's, in order)."""
    record = show_job(workspace, name)
    runs = [show_job(workspace, c) for c in record.children.values()] if record.children else [record]
    return [f for r in runs if r.logs_dir.is_dir() for f in sorted(r.logs_dir.iterdir())]


def stream_job(workspace: Workspace, name: str, *, follow: bool = True, poll: float = 0.2) -> Iterator[str]:
    """``az ml job stream``: each log file's lines, headed by its name, until the job ends."""
    offsets: dict[Path, int] = {}
    while True:
        done = show_job(workspace, name).status in FINISHED
        for path in log_files(workspace, name):
            start = offsets.get(path)
            if start is None:
                yield f"--- {path.parent.parent.name}/{path.parent.name}/{path.name}\n"
                start = 0
            with open(path, "rb") as handle:
                handle.seek(start)
                data = handle.read()
            offsets[path] = start + len(data)
            if data:
                yield data.decode("utf-8", "replace")
        if done or not follow:
            return
        time.sleep(poll)


def download_job(workspace: Workspace, name: str, destination: Path, output: str | None = None) -> list[Path]:
    """``az ml job download``: the logs (``user_logs/``) and each named output under ``destination/<name>/``."""
    from azbai.ml.data import parse_uri
    from azbai.ml.registry import Registry

    record = show_job(workspace, name)
    runs = [show_job(workspace, c) for c in record.children.values()] if record.children else [record]
    written = []
    target = destination / name
    for run in runs:
        if run.logs_dir.is_dir():
            logs = target / "user_logs" / ((run.display_name or run.name) if record.children else "")
            logs.mkdir(parents=True, exist_ok=True)
            for file in run.logs_dir.iterdir():
                written.append(Path(_copy(file, logs / file.name)))
        for key, value in run.outputs.items():
            if output not in (None, key):
                continue
            location = parse_uri(value["uri"])
            if location.datastore is None:
                continue
            store = Registry(workspace).datastore(location.datastore).open(workspace)
            folder = target / "named-outputs" / key
            if store.root_exists():
                transfer.download(store, location.path, folder)
            written.append(folder)
    return written


def _copy(source: Path, target: Path) -> str:
    import shutil

    return str(shutil.copyfile(source, target))


def cancel_job(workspace: Workspace, name: str, timeout: float = 60.0) -> RunRecord:
    """``az ml job cancel``: stop the runner (its outputs and logs are still staged out)."""
    record = show_job(workspace, name)
    if record.status in FINISHED:
        return record
    if record.pid and record.runner_alive and record.pid != os.getpid():
        os.kill(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = show_job(workspace, name)
        if record.status in FINISHED:
            return record
        time.sleep(0.2)
    record.status, record.end_time = CANCELED, now()
    record.save()
    return record


if __name__ == "__main__":
    sys.exit(run_recorded(Path(sys.argv[1]).resolve()))
