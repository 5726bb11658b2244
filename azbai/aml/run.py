"""Local runs with Azure ML's ``Run`` calls: status, waiting (with the log), details, files, cancel.

A :class:`Run` is a local job (``azbai job show -n <run id> -e <experiment>`` shows the same one); a
:class:`PipelineRun` is a local pipeline run whose steps are runs. Statuses are Azure ML's:

==============  ===========================================================================
NotStarted      submitted, nothing started yet (a pipeline run before its first step)
Queued          the job is recorded, its runner has not started
Preparing       the runner is staging the data in (downloads, mirrors)
Running         the script runs
Finalizing      the script ended; outputs are being uploaded and mirrors written back
Completed       it succeeded
Failed          it failed (stage-out still ran)
Canceled        ``cancel()`` stopped it (stage-out still ran)
==============  ===========================================================================
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from azbai.errors import AzbaiError, JobError, JobFailed, PipelineError
from azbai.local import service
from azbai.local.jobs import FAILED, QUEUED, RUNNING, SUCCEEDED, TERMINATED, JobBook, JobRecord
from azbai.local.pipelines import PipelineRun as LocalPipelineRun
from azbai.local.records import load_record, save_record

if TYPE_CHECKING:
    from azbai.aml.workspace import Workspace

NOT_STARTED, QUEUED_STATUS, PREPARING, RUNNING_STATUS = "NotStarted", "Queued", "Preparing", "Running"
FINALIZING, COMPLETED, FAILED_STATUS, CANCELED = "Finalizing", "Completed", "Failed", "Canceled"
FINAL_STATUSES = (COMPLETED, FAILED_STATUS, CANCELED)

#: the format of a run's ``aml-run.json`` (what was submitted, for ``get_details``)
RUN_FORMAT = 1
RUN_FILE = "aml-run.json"
LOGS, OUTPUTS = "azureml-logs", "outputs"
_STATUS = {QUEUED: QUEUED_STATUS, SUCCEEDED: COMPLETED, FAILED: FAILED_STATUS, TERMINATED: CANCELED}


class Run:
    """A local run of an experiment: an Estimator, a ScriptRunConfig or a Batch AI job."""

    def __init__(self, workspace: Workspace, experiment: str, run_id: str) -> None:
        self.workspace = workspace
        self.experiment_name = experiment
        self.id = run_id

    def record(self) -> JobRecord:
        """The local job record behind the run, as it is now."""
        return JobBook(self.workspace.local_workspace()).get(self.id, self.experiment_name)

    def get_status(self) -> str:
        """Azure ML's status name (see the module docstring)."""
        return job_status(self.record())

    def wait_for_completion(
        self,
        show_output: bool = False,
        wait_post_processing: bool = False,
        raise_on_error: bool = True,
        *,
        output: IO[str] | None = None,
        poll: float = 0.25,
    ) -> dict[str, Any]:
        """Wait until the run ends and return :meth:`get_details`; ``show_output`` streams its log meanwhile.

        The log goes to ``output`` (default ``sys.stdout``, as Azure ML prints it). :class:`JobFailed` when the run
        failed or was canceled and ``raise_on_error``.
        """
        follower = _LogFollower(output or sys.stdout) if show_output else None
        while True:
            record = self.record()
            if follower is not None and record.stdouterr_dir:
                follower.follow(Path(record.stdouterr_dir))
            if record.finished:
                break
            time.sleep(poll)
        if follower is not None and record.stdouterr_dir:
            follower.follow(Path(record.stdouterr_dir))
        details = self.get_details()
        if raise_on_error and record.state != SUCCEEDED:
            raise JobFailed(
                f"run {self.id!r} of experiment {self.experiment_name!r} is {details['status']}"
                + (f" with exit code {record.exit_code}" if record.exit_code is not None else "")
                + (f": {record.message}" if record.message else "")
                + f"; logs: run.get_file_names() lists {LOGS}/…",
                record.exit_code or 1,
            )
        return details

    def get_details(self) -> dict[str, Any]:
        """What the run is and how it went, with Azure ML's field names."""
        record = self.record()
        definition = _definition(record)
        details: dict[str, Any] = {
            "runId": self.id,
            "experiment": self.experiment_name,
            "target": definition.get("target", "local"),
            "status": job_status(record),
            "startTimeUtc": record.start_time,
            "endTimeUtc": record.end_time,
            "exitCode": record.exit_code,
            "properties": {"azbai.job": record.name, "azbai.directory": record.directory},
            "runDefinition": definition.get("runDefinition", {}),
            "logFiles": {
                name: str(path) for name, path in self._files().items() if name.startswith(LOGS + "/")
            },
        }
        if record.message:
            details["error"] = {"message": record.message}
        return details

    def get_file_names(self) -> list[str]:
        """The run's files: ``azureml-logs/<stdout, stderr, execution log>`` and ``outputs/…``."""
        return sorted(self._files())

    def download_file(self, name: str, output_file_path: str | Path | None = None) -> Path:
        """Copy the run's file ``name`` to ``output_file_path`` (a file or a folder; default: here)."""
        files = self._files()
        if name not in files:
            raise JobError(
                f"run {self.id!r} has no file {name!r} (files: {', '.join(sorted(files)) or 'none'})"
            )
        target = Path(output_file_path) if output_file_path is not None else Path(Path(name).name)
        if target.is_dir():
            target = target / Path(name).name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(files[name], target)
        except OSError as exc:
            raise JobError(f"cannot write {target}: {exc.strerror or exc}") from exc
        return target

    def cancel(self) -> None:
        """Stop the run; its logs and partial outputs are still staged out."""
        service.terminate_job(self.record())

    def _files(self) -> dict[str, Path]:
        record = self.record()
        files: dict[str, Path] = {}
        if record.stdouterr_dir:
            for item in service.list_files(record):
                files[f"{LOGS}/{item.name}"] = Path(record.stdouterr_dir) / item.name
        snapshot = record.path / "snapshot"
        if snapshot.is_dir():  # an Estimator or a ScriptRunConfig: ./outputs of its working directory
            files.update(_tree(snapshot / OUTPUTS, OUTPUTS))
        else:  # a Batch AI job: its output directories, by id
            for output_id, location in record.outputs.items():
                files.update(_tree(Path(location.local), f"{OUTPUTS}/{output_id}"))
        return files

    def __repr__(self) -> str:
        return f"Run(experiment={self.experiment_name!r}, id={self.id!r})"


class PipelineRun:
    """A local pipeline run started by ``Experiment.submit(plan)``; its steps are :class:`Run` objects.

    The steps run in a thread of this process (not a daemon: a script that ends before the run waits for it).
    """

    def __init__(self, workspace: Workspace, experiment: str, pipeline: str, run_id: str) -> None:
        self.workspace = workspace
        self.experiment_name = experiment
        self.pipeline = pipeline
        self.id = run_id
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._canceled = threading.Event()

    def start(self, body: Any) -> PipelineRun:
        """Run ``body()`` (the pipeline runner) in a thread; a failure is kept for :meth:`wait_for_completion`."""

        def target() -> None:
            try:
                body()
            except AzbaiError as exc:
                self.error = exc

        self._thread = threading.Thread(target=target, name=f"azbai-pipeline-{self.id}")
        self._thread.start()
        return self

    def local_run(self) -> LocalPipelineRun | None:
        """The recorded local run (None before it started)."""
        directory = self.workspace.local_workspace().pipelines_dir / self.pipeline / "runs" / self.id
        if not (directory / "run.json").exists():
            return None
        return LocalPipelineRun.load(directory)

    def get_status(self) -> str:
        """Azure ML's status name of the whole run."""
        run = self.local_run()
        if run is None:
            alive = self._thread is not None and self._thread.is_alive()
            return FAILED_STATUS if self.error is not None else (NOT_STARTED if not alive else PREPARING)
        if run.state == "running":
            return RUNNING_STATUS
        if self._canceled.is_set():
            return CANCELED
        return COMPLETED if run.state == "succeeded" else FAILED_STATUS

    def get_steps(self) -> list[Run]:
        """A run for each step that started (reused steps ran in an earlier run and have none here)."""
        run = self.local_run()
        if run is None:
            return []
        experiment = self.experiment_name
        return [Run(self.workspace, experiment, state.job) for state in run.steps.values() if state.job]

    def wait_for_completion(
        self, show_output: bool = False, raise_on_error: bool = True, *, output: IO[str] | None = None
    ) -> dict[str, Any]:
        """Wait for every step; ``show_output`` prints each step's state as it changes."""
        stream = output or sys.stdout
        seen: dict[str, str] = {}
        while self._thread is not None and self._thread.is_alive():
            if show_output:
                self._report(seen, stream)
            self._thread.join(0.25)
        if show_output:
            self._report(seen, stream)
        details = self.get_details()
        if raise_on_error and details["status"] != COMPLETED:
            raise PipelineError(
                f"pipeline run {self.id!r} is {details['status']}: {self.error or 'a step failed'}"
            )
        return details

    def get_details(self) -> dict[str, Any]:
        """The run's status and its steps' states."""
        run = self.local_run()
        return {
            "runId": self.id,
            "experiment": self.experiment_name,
            "pipeline": self.pipeline,
            "status": self.get_status(),
            "startTimeUtc": run.started if run else None,
            "endTimeUtc": run.ended if run else None,
            "parameters": dict(run.parameters) if run else {},
            "steps": {name: s.state for name, s in run.steps.items()} if run else {},
            **({"error": {"message": str(self.error)}} if self.error else {}),
        }

    def get_file_names(self) -> list[str]:
        """A pipeline run's files are its steps' (``get_steps()``): none of its own."""
        return []

    def download_file(self, name: str, output_file_path: str | Path | None = None) -> Path:
        """:class:`JobError`: the files are the steps' (``run.get_steps()[i].download_file(name)``)."""
        steps = ", ".join(s.id for s in self.get_steps()) or "none yet"
        raise JobError(
            f"pipeline run {self.id!r} has no file {name!r}: its steps' runs have the files ({steps})"
        )

    def cancel(self) -> None:
        """Stop the step that is running; the run ends Canceled."""
        self._canceled.set()
        for step in self.get_steps():
            record = step.record()
            if record.state in (QUEUED, RUNNING):
                service.terminate_job(record)

    def _report(self, seen: dict[str, str], stream: IO[str]) -> None:
        run = self.local_run()
        for name, state in run.steps.items() if run else []:
            if seen.get(name) != state.state:
                seen[name] = state.state
                stream.write(f"step {name}: {state.state}\n")
                stream.flush()

    def __repr__(self) -> str:
        return f"PipelineRun(experiment={self.experiment_name!r}, pipeline={self.pipeline!r}, id={self.id!r})"


def job_status(record: JobRecord) -> str:
    """Azure ML's status name for a local job record."""
    if record.state != RUNNING:
        return _STATUS.get(record.state, NOT_STARTED)
    if not record.stdouterr_dir:
        return PREPARING
    logs = Path(record.stdouterr_dir)
    for log in logs.glob("execution-*.log") if logs.is_dir() else []:
        try:
            if "job finished with exit code" in log.read_text(encoding="utf-8", errors="replace"):
                return FINALIZING
        except OSError:
            continue
    return RUNNING_STATUS


def write_definition(directory: Path, definition: dict[str, Any]) -> None:
    """Keep what was submitted beside the job record (no secret in it)."""
    try:
        save_record(directory / RUN_FILE, definition, RUN_FORMAT)
    except OSError as exc:
        raise JobError(f"cannot write {directory / RUN_FILE}: {exc.strerror or exc}") from exc


def _definition(record: JobRecord) -> dict[str, Any]:
    path = record.path / RUN_FILE
    if not path.exists():
        return {}
    return load_record(path, RUN_FORMAT, "run definition", JobError, dict)


def _tree(root: Path, label: str) -> dict[str, Path]:
    if not root.is_dir():
        return {}
    return {
        f"{label}/{path.relative_to(root).as_posix()}": path
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.name.startswith(".azbai-")
    }


class _LogFollower:
    """Copies what the run's stdout/stderr files gained since the last look (``show_output``)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.offsets: dict[Path, int] = {}

    def follow(self, directory: Path) -> None:
        if not directory.is_dir():
            return
        for path in sorted(directory.glob("std*.txt")):
            offset = self.offsets.get(path, 0)
            try:
                with open(path, "rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
            except OSError:
                continue
            if chunk:
                self.offsets[path] = offset + len(chunk)
                self.stream.write(chunk.decode("utf-8", errors="replace"))
                self.stream.flush()
