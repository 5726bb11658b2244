"""Run records of the local Azure ML engine: ``<workspace>/ml/jobs/<name>/run.json`` (with a format number).

A run's folder::

    run.json                 name, type, status (Azure ML's: NotStarted, Running, Completed, Failed, Canceled),
                             the file and --set it came from, inputs, outputs, children of a pipeline, the
                             runner's pid (and start time), and where its stage-out stands (``stage_out``)
    stageout.json            what stage-out has to do, written before the job's processes start
                             (:func:`azbai.ml.data.write_stage_out`), each output marked done as it is staged out;
                             with ``stageout.lock``, what lets a later command finish it when the runner died
    user_logs/               std_log.txt or std_log_process_<rank>.txt: what `az ml job stream` shows
    nodes/<n>/wd/            instance n's copy of the code directory, its working directory
    data/                    downloaded inputs, blob mirrors; lazy blob mounts (``inputs/``, ``outputs/``: links to
                             their caches once unmounted) and their caches (``mount-cache/``)
"""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from azbai.errors import MlError
from azbai.local.jobs import process_alive, process_start
from azbai.local.records import load_record, save_record, strict_fields
from azbai.local.workspace import Workspace

#: the format of ``run.json``
RUN_FORMAT = 1
NOT_STARTED, RUNNING, COMPLETED, FAILED, CANCELED = "NotStarted", "Running", "Completed", "Failed", "Canceled"
FINISHED = (COMPLETED, FAILED, CANCELED)
#: ``stage_out``: recorded and not yet done (or under way), done, or tried and failed (retried by the next look)
STAGE_PENDING, STAGE_DONE, STAGE_FAILED = "Pending", "Done", "Failed"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,254}$")


def now() -> str:
    """The current time, ISO 8601 in UTC."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_name() -> str:
    """A fresh run name, unique like Azure ML's generated ones."""
    return f"azbai_{uuid.uuid4().hex[:12]}"


@dataclass
class RunRecord:
    """One local Azure ML job (or pipeline node) run."""

    name: str
    directory: str
    type: str = "command"
    display_name: str | None = None
    experiment: str = "Default"
    status: str = NOT_STARTED
    file: str = ""
    sets: dict[str, str] = field(default_factory=dict)
    parent: str | None = None
    compute: str | None = None
    created: str = ""
    start_time: str | None = None
    end_time: str | None = None
    exit_code: int | None = None
    message: str | None = None
    pid: int | None = None
    #: the runner's start time (:func:`~azbai.local.jobs.process_start`): a recycled pid is not the runner
    pid_started: str | None = None
    processes: int = 0
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    children: dict[str, str] = field(default_factory=dict)
    #: None (nothing recorded: nothing of the job's ran), or STAGE_PENDING, STAGE_DONE, STAGE_FAILED
    stage_out: str | None = None
    stage_out_error: str | None = None

    @property
    def path(self) -> Path:
        """The run's folder."""
        return Path(self.directory)

    @property
    def logs_dir(self) -> Path:
        """``user_logs/``."""
        return self.path / "user_logs"

    def set_runner(self, pid: int) -> None:
        """Record ``pid`` as the process that runs this job (and when it started)."""
        self.pid, self.pid_started = pid, process_start(pid)

    @property
    def runner_alive(self) -> bool:
        """Whether the recorded runner still runs (the same process: not a zombie, not a recycled pid)."""
        return pid_alive(self.pid, self.pid_started)

    def note_stage_out(self, state: str, error: str | None) -> None:
        """Record where the stage-out stands. A failure is also said in :attr:`message` (what ``azbai ml job
        show`` and a failed wait print), after the job's own message; a later success takes that part away
        again, so a job that succeeded has no message left once its outputs are in storage."""
        note = f"stage-out failed: {self.stage_out_error}"
        own = self.message
        if self.stage_out == STAGE_FAILED and own is not None and own.endswith(note):
            own = own[: -len(note)].removesuffix("; ") or None
        self.stage_out, self.stage_out_error = state, error
        if state == STAGE_FAILED:
            own = f"{own}; stage-out failed: {error}" if own else f"stage-out failed: {error}"
        self.message = own

    def save(self) -> None:
        """Write ``run.json`` atomically."""
        save_record(self.path / "run.json", asdict(self), RUN_FORMAT)

    @classmethod
    def load(cls, directory: Path) -> RunRecord:
        """Read a run's ``run.json``."""
        return load_record(
            directory / "run.json", RUN_FORMAT, "local Azure ML run record", MlError,
            lambda data: cls(**strict_fields(cls, data)),
            hint="delete the run's folder, or use the azbai version that wrote it",
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """What ``azbai ml job show`` prints."""
        return {k: v for k, v in asdict(self).items() if k not in ("sets",)}


class RunBook:
    """The runs of one workspace."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.root = workspace.root / "ml" / "jobs"

    def create(self, name: str | None = None, **fields: Any) -> RunRecord:
        """A new run folder and record; an existing name is an error (as in Azure ML)."""
        name = name or new_name()
        if not _NAME.match(name):
            raise MlError(f"{name!r} is not a valid job name (letters, digits, '_' and '-')")
        directory = self.root / name
        try:
            directory.mkdir(parents=True)
        except FileExistsError:
            raise MlError(f"a job named {name!r} already exists in this workspace") from None
        record = RunRecord(name, str(directory), created=now(), **fields)
        record.save()
        return record

    def get(self, name: str) -> RunRecord:
        """A run by name."""
        directory = self.root / name
        if not _NAME.match(name) or not (directory / "run.json").exists():
            raise MlError(f"no job named {name!r} in this workspace (azbai ml job list)")
        return RunRecord.load(directory)

    def list(self, *, children: bool = False) -> list[RunRecord]:
        """Every run, oldest first; pipeline nodes only with ``children``."""
        if not self.root.is_dir():
            return []
        runs = [RunRecord.load(p.parent) for p in self.root.glob("*/run.json")]
        runs = [r for r in runs if children or r.parent is None]
        return sorted(runs, key=lambda r: (r.created, r.name))


def pid_alive(pid: int | None, started: str | None = None) -> bool:
    """Whether a runner process still runs (a zombie does not; nor a later process given its pid, when
    ``started`` is known)."""
    return pid is not None and pid > 0 and process_alive(pid, started)
