"""Fixtures for ``azbai az``: a workspace with its own Azurite (stopped by PID), and a way to run az command lines."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from azbai.az import Context, Outcome, run
from azbai.local.azurite import Emulator
from azbai.local.workspace import Workspace


class Az:
    """Runs ``az …`` lines in-process against one workspace, as ``azbai az`` does (``confirm`` answers prompts)."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self.answer = False
        self.notes: list[str] = []

    def __call__(self, line: str | list[str]) -> Outcome:
        argv = shlex.split(line) if isinstance(line, str) else line
        if argv and argv[0] == "az":
            argv = argv[1:]
        ctx = Context(self.workspace, confirm=lambda question: self.answer)
        outcome = run(argv, ctx)
        if outcome.stream is not None:
            outcome.text = b"".join(outcome.stream).decode("utf-8", "replace")
            outcome.stream = None
        self.notes += outcome.notes
        return outcome

    def json(self, line: str) -> Any:
        """The JSON the command printed."""
        return json.loads(self(line).text)


@pytest.fixture(scope="module")
def az_workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    workspace = Workspace(tmp_path_factory.mktemp("az-ws"))
    emulator = Emulator(workspace)
    try:
        yield workspace
    finally:
        emulator.stop()


@pytest.fixture
def az(az_workspace: Workspace) -> Az:
    return Az(az_workspace)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
