"""What an ``azbai az`` command gets (the local workspace, its az records, a way to ask) and what it returns."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from azbai.az.state import Namespace
from azbai.local.workspace import Workspace


@dataclass
class Context:
    """One command's surroundings. ``notes`` are the one-line remarks the CLI prints on stderr (az's warnings)."""

    workspace: Workspace
    confirm: Callable[[str], bool]
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    notes: list[str] = field(default_factory=list)

    @property
    def ns(self) -> Namespace:
        """The az records of the workspace."""
        return Namespace(self.workspace)

    def note(self, text: str) -> None:
        """A remark for stderr (never a secret)."""
        self.notes.append(text)


@dataclass
class Result:
    """A command's result: a JSON value az would print, or a byte stream (``job file stream``), and an exit code."""

    value: Any = None
    stream: Iterator[bytes] | None = None
    exit_code: int = 0
    #: False: nothing to print (az printed nothing for commands returning None)
    printed: bool = True


def timestamp() -> str:
    """Now, as Azure's JSON wrote times (``2018-06-12T21:25:07.039000+00:00``)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")
