"""The exceptions azbai raises.

Every error azbai raises on purpose derives from :class:`AzbaiError`; the CLI catches that one class at its edge
and prints ``Error: …`` with no traceback. Foreign exceptions (``json``, ``azure.core``, ``subprocess``, ``OSError``)
are translated at the boundary where they happen, with ``raise … from exc``.

    AzbaiError
    ├── SpecError              a Batch AI job.json / cluster.json has problems (carries every Diagnostic at once)
    ├── PlanError              a valid config that cannot be turned into a plan (e.g. conflicting flags)
    ├── TargetError            the Azure ML SDK refused to build or submit what the plan describes
    ├── StorageError           the embedded storage (Azurite, local file shares) failed or was misused
    │   └── TransferError      an upload or download did not complete or did not verify
    ├── JobError               a local job cannot be created, found or controlled
    │   ├── JobFailed          a local job ran and failed (carries the exit code)
    │   └── MlError            a CLI v2 job file, datastore or compute cannot be used locally (``azbai ml``)
    │       └── MlJobFailed    a local Azure ML job (or pipeline node) ran and failed (carries the exit code)
    ├── PipelineError          a local pipeline cannot run (a step failed, a cycle, a bad trigger)
    ├── AzError                what Azure would have refused an ``az`` command (not found, exists, invalid)
    └── AzUsageError           an ``az`` command line az itself would have refused (exit code 2)

Messages never contain secret values: storage keys, SAS tokens and job ``secrets`` are described, not quoted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from azbai.source.diagnostics import Diagnostic


class AzbaiError(Exception):
    """Root of every error azbai raises on purpose."""


class SpecError(AzbaiError):
    """A Batch AI config has one or more errors; ``diagnostics`` holds all of them (errors and warnings)."""

    def __init__(self, source: str, diagnostics: Iterable[Diagnostic]) -> None:
        self.source = source
        self.diagnostics = tuple(diagnostics)
        errors = [d for d in self.diagnostics if d.is_error]
        lines = [f"{source}: {len(errors)} error(s)"]
        lines += [f"  {d}" for d in errors]
        super().__init__("\n".join(lines))


class PlanError(AzbaiError):
    """A valid config that cannot be planned as asked."""


class TargetError(AzbaiError):
    """The Azure ML SDK could not build or submit the objects the plan describes."""


class StorageError(AzbaiError):
    """The embedded storage failed or was asked for something impossible."""


class TransferError(StorageError):
    """An upload or download did not complete or its content did not verify."""


class JobError(AzbaiError):
    """A local job cannot be created, found or controlled."""


class JobFailed(JobError):
    """A local job ran and failed."""

    def __init__(self, message: str, exit_code: int) -> None:
        self.exit_code = exit_code
        super().__init__(message)


class MlError(JobError):
    """A v2 job, datastore or compute file cannot be read or run locally; the message says which and why."""


class MlJobFailed(MlError):
    """A local Azure ML job ran and failed."""

    def __init__(self, message: str, exit_code: int) -> None:
        self.exit_code = exit_code
        super().__init__(message)


class PipelineError(AzbaiError):
    """A local pipeline cannot run."""


class AzError(AzbaiError):
    """What the service (Resource Manager, Batch AI, Storage) would have refused: not found, exists, invalid."""


class AzUsageError(AzbaiError):
    """A command line az would have refused (exit code 2, as argparse)."""

    exit_code = 2
