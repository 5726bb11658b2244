"""The errors of the local Azure ML engine, under azbai's root (``azbai.errors``)::

AzbaiError
└── JobError
    └── MlError            a v2 job file, datastore or compute cannot be used locally (names the file or name)
        └── MlJobFailed    a local Azure ML job (or a pipeline node) ran and failed; carries the exit code
"""

from __future__ import annotations

from azbai.errors import JobError


class MlError(JobError):
    """A v2 job, datastore or compute file cannot be read or run locally; the message says which and why."""


class MlJobFailed(MlError):
    """A local Azure ML job ran and failed."""

    def __init__(self, message: str, exit_code: int) -> None:
        self.exit_code = exit_code
        super().__init__(message)
