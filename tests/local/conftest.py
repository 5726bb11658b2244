"""Fixtures for the local storage tests: a real Azurite emulator (started here, stopped by its PID) and stores."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import azbai
from azbai.facade import secret_values
from azbai.local.azurite import Emulator
from azbai.local.jobs import JobRecord
from azbai.local.service import create_job
from azbai.local.stores import BlobStore, ShareStore, Store
from azbai.local.workspace import Workspace

ACCOUNT = "azbaitest"


def unique(prefix: str = "t") -> str:
    """A container or share name no other test uses."""
    return f"{prefix}{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """One emulator for the session (startup costs seconds), serving ``azbaitest`` and ``devstoreaccount1``."""
    emulator = Emulator(Workspace(tmp_path_factory.mktemp("azurite-session")))
    emulator.ensure([ACCOUNT])
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def fresh_emulator(tmp_path: Path) -> Iterator[Emulator]:
    """An emulator of its own (not started yet) for lifecycle tests; stopped by PID afterwards."""
    emulator = Emulator(Workspace(tmp_path / "ws"))
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def blob_store(emulator: Emulator) -> Iterator[BlobStore]:
    """A fresh container in the session emulator, deleted afterwards."""
    store = BlobStore.open(emulator.workspace, ACCOUNT, unique())
    try:
        yield store
    finally:
        store.delete_container()
        store.close()


@pytest.fixture
def share_store(tmp_path: Path) -> Iterator[ShareStore]:
    """A fresh share in a workspace of its own, removed afterwards."""
    workspace = Workspace(tmp_path / "share-ws")
    name = unique("s")
    store = ShareStore.open(workspace, ACCOUNT, name)
    try:
        yield store
    finally:
        shutil.rmtree(workspace.root, ignore_errors=True)


@pytest.fixture(params=["blob", "share"])
def store(request: pytest.FixtureRequest) -> Store:
    """Each Store implementation in turn: the conformance suite runs against all of them."""
    return request.getfixturevalue(f"{request.param}_store")


def run_job(
    workspace: Workspace, path: Path, load: dict[str, Any] | None = None, **options: Any
) -> JobRecord:
    """``azbai job create``: read the job file (with ``load`` options), then create the job with its secrets."""
    plan = azbai.load(path, **(load or {}))
    return create_job(workspace, plan, secrets=secret_values(plan), **options)
