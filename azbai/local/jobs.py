"""Local job records: what ``azbai job show`` reports, kept in the workspace so they survive restarts.

One directory per job, ``<workspace>/jobs/<experiment>/<job>/``::

    record.json       state, times, exit code, segment, where stdout/stderr and outputs are (no secrets)
    plan.json         the plan the job runs
    azbai_job.json    the plan's job section, which the launcher reads
    runner.log        what the runner (staging, launcher, upload) logged
    work/             the launcher's work directory (mount links, temp directories, staged data)

States follow Batch AI's ``executionState``: queued → running → succeeded | failed, and terminated (terminate).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from azbai.errors import JobError
from azbai.local.records import load_record, save_record, strict_fields
from azbai.local.workspace import Workspace

#: the format of ``record.json``
RECORD_FORMAT = 1

QUEUED, RUNNING, SUCCEEDED, FAILED, TERMINATED = "queued", "running", "succeeded", "failed", "terminated"
FINAL_STATES = (SUCCEEDED, FAILED, TERMINATED)
#: stage-out states
PENDING, STAGE_FAILED, DONE = "pending", "failed", "done"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def now() -> str:
    """The current UTC time in ISO-8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_name(name: str, what: str = "job name") -> str:
    """Batch AI names: letters, digits, '-' and '_', up to 64 characters."""
    if not _NAME_RE.match(name):
        raise JobError(
            f"invalid {what} {name!r}: use letters, digits, '-' and '_' (at most 64, starting alphanumeric)"
        )
    return name


@dataclass
class OutputLocation:
    """Where an output directory's files are: the local directory the job wrote, and the datastore it went to."""

    local: str
    store_kind: str | None = None
    account: str | None = None
    store: str | None = None
    prefix: str | None = None


@dataclass
class JobRecord:
    """The state of one local job."""

    name: str
    experiment: str
    directory: str
    state: str = QUEUED
    creation_time: str = field(default_factory=now)
    start_time: str | None = None
    end_time: str | None = None
    exit_code: int | None = None
    message: str | None = None
    segment: str = ""
    tool_type: str = ""
    node_count: int = 1
    runner_pid: int | None = None
    runner_started: str | None = None
    stdouterr_dir: str | None = None
    outputs: dict[str, OutputLocation] = field(default_factory=dict)
    source: str | None = None
    launcher_pid: int | None = None
    launcher_started: str | None = None
    #: ``pending`` from stage-in until every output and log reached storage (``done``); ``failed`` when the last
    #: attempt failed (the next ``azbai job`` command that looks at the job tries again)
    stage_out: str | None = None
    stage_out_error: str | None = None

    @property
    def path(self) -> Path:
        """The job's directory."""
        return Path(self.directory)

    @property
    def work_dir(self) -> Path:
        """The launcher's work directory."""
        return self.path / "work"

    @property
    def finished(self) -> bool:
        """True once the job reached a final state."""
        return self.state in FINAL_STATES

    def save(self) -> None:
        """Write ``record.json`` atomically, with its format number."""
        save_record(self.path / "record.json", asdict(self), RECORD_FORMAT)

    @classmethod
    def load(cls, directory: Path) -> JobRecord:
        """Read ``record.json``; :class:`JobError` for a stale or foreign one."""

        def build(data: dict[str, Any]) -> JobRecord:
            data = strict_fields(cls, data)
            data["outputs"] = {k: OutputLocation(**v) for k, v in data.get("outputs", {}).items()}
            return cls(**data)

        return load_record(
            directory / "record.json",
            RECORD_FORMAT,
            "job record",
            JobError,
            build,
            hint=f"remove the directory {directory} to forget that job",
        )

    @property
    def runner_alive(self) -> bool:
        """Whether the process that recorded itself as the job's runner still runs."""
        return bool(self.runner_pid) and process_alive(self.runner_pid or 0, self.runner_started)

    @property
    def stranded(self) -> bool:
        """Outputs or logs are not in storage yet, and no runner is going to put them there: its stage-out failed
        (its attempt is over, whether or not its process has exited yet), or it died before staging out."""
        return self.stage_out == STAGE_FAILED or (self.stage_out == PENDING and not self.runner_alive)

    def refresh(self, *, recover: bool = True) -> JobRecord:
        """The record as it is on disk now. A job whose runner is gone is not left running: its processes are
        stopped, the record says so, and its stage-out is finished (or retried after a failure), so outputs and
        logs produced so far reach storage. ``recover=False`` only reads."""
        record = JobRecord.load(self.path)
        if not recover:
            return record
        if record.state in (QUEUED, RUNNING) and record.runner_pid and not record.runner_alive:
            from azbai.local.runner import recover_job

            return recover_job(record)
        if record.finished and record.stranded:
            from azbai.local.runner import recover_job

            return recover_job(record)
        return record

    def to_dict(self) -> dict[str, Any]:
        """The record as ``azbai job show`` prints it (Batch AI's field names)."""
        return {
            "name": self.name,
            "experiment": self.experiment,
            "executionState": self.state,
            "creationTime": self.creation_time,
            "executionInfo": {
                "startTime": self.start_time,
                "endTime": self.end_time,
                "exitCode": self.exit_code,
                "errors": self.errors,
            },
            "jobOutputDirectoryPathSegment": self.segment,
            "toolType": self.tool_type,
            "nodeCount": self.node_count,
            "stdOutErrDirectory": self.stdouterr_dir,
            "outputDirectories": {k: asdict(v) for k, v in self.outputs.items()},
            "stageOut": self.stage_out,
        }

    @property
    def errors(self) -> list[str]:
        """Why the job failed, was stopped, or what of it is not in storage yet (``executionInfo.errors``)."""
        errors = [self.message] if self.message else []
        if self.stage_out_error:
            errors.append(f"stage-out failed: {self.stage_out_error}")
        return errors


class JobBook:
    """The job records of a workspace."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def directory(self, experiment: str, name: str) -> Path:
        """Where a job's record lives."""
        return self.workspace.jobs_dir / check_name(experiment, "experiment name") / check_name(name)

    def create(self, experiment: str, name: str) -> JobRecord:
        """A new record; :class:`JobError` when the experiment already has a job of that name (as in Batch AI)."""
        directory = self.directory(experiment, name)
        if (directory / "record.json").exists():
            raise JobError(
                f"a job named {name!r} already exists in experiment {experiment!r}; "
                f"delete it first (azbai job delete -n {name} -e {experiment}) or choose another name"
            )
        directory.mkdir(parents=True, exist_ok=True)
        record = JobRecord(name=name, experiment=experiment, directory=str(directory))
        record.save()
        return record

    def get(self, name: str, experiment: str | None = None) -> JobRecord:
        """The record of a job, found by name (and experiment when several have one of that name)."""
        if experiment is not None:
            directory = self.directory(experiment, name)
            if not (directory / "record.json").exists():
                raise JobError(f"no job named {name!r} in experiment {experiment!r}")
            return JobRecord.load(directory).refresh()
        found = sorted(self.workspace.jobs_dir.glob(f"*/{check_name(name)}/record.json"))
        if not found:
            raise JobError(f"no job named {name!r} (azbai job list shows the jobs)")
        if len(found) > 1:
            experiments = ", ".join(p.parent.parent.name for p in found)
            raise JobError(
                f"several experiments have a job named {name!r} ({experiments}): add -e EXPERIMENT"
            )
        return JobRecord.load(found[0].parent).refresh()

    def list(self, experiment: str | None = None) -> list[JobRecord]:
        """Every job (of one experiment), oldest first."""
        pattern = (
            f"{check_name(experiment, 'experiment name')}/*/record.json" if experiment else "*/*/record.json"
        )
        records = [JobRecord.load(p.parent).refresh() for p in self.workspace.jobs_dir.glob(pattern)]
        return sorted(records, key=lambda r: (r.creation_time, r.experiment, r.name))


def process_start(pid: int) -> str | None:
    """When a process started (clock ticks since boot, from /proc), to tell it from a later one with its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: the fields after its last ')' are fixed
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int, started: str | None = None) -> bool:
    """Whether ``pid`` is still the process that recorded itself as the job's runner (not a recycled pid, not a
    zombie waiting for its parent to collect it)."""
    try:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
    except (OSError, IndexError):
        pass
    current = process_start(pid)
    if current is None:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True  # no /proc: trust the pid
    return started is None or current == started
