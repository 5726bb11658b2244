"""Fixtures for the Azure ML API tests: one local workspace with a real Azurite per module, and helpers."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from azbai.aml import Workspace
from azbai.local.azurite import Emulator
from azbai.local.workspace import Workspace as LocalWorkspace


def unique(prefix: str = "t") -> str:
    """A container, share or datastore name no other test uses."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def workspace_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A local workspace whose Azurite runs for the module (stopped by its PID afterwards)."""
    root = tmp_path_factory.mktemp("aml-ws")
    emulator = Emulator(LocalWorkspace(root))
    emulator.ensure()
    try:
        yield root
    finally:
        emulator.stop()


@pytest.fixture
def ws(workspace_root: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """The module's local workspace, also as ``$AZBAI_WORKSPACE``."""
    monkeypatch.setenv("AZBAI_WORKSPACE", str(workspace_root))
    return Workspace(workspace_root)


def write(path: Path, text: str) -> Path:
    """Write dedented ``text`` to ``path`` (creating folders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path
