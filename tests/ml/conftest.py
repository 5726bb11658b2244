"""Fixtures for the local Azure ML engine: a workspace with a real Azurite (started here, stopped by its PID)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from azbai.local.azurite import Emulator
from azbai.local.workspace import Workspace

pytest.importorskip("azure.ai.ml")


@pytest.fixture(scope="module")
def ml_workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    """A workspace of the module's own, its emulator running."""
    workspace = Workspace(tmp_path_factory.mktemp("ml-ws"))
    emulator = Emulator(workspace)
    emulator.ensure()
    try:
        yield workspace
    finally:
        emulator.stop()


def register(workspace: Workspace, v2: Path) -> None:
    """``az ml datastore create`` and ``az ml compute create`` for every file of a migration's ``v2/`` folder."""
    from azbai.ml.registry import Registry

    registry = Registry(workspace)
    for file in sorted((v2 / "datastores").glob("*.yml")):
        registry.create_datastore(file)
    for file in sorted((v2 / "computes").glob("*.yml")):
        registry.create_compute(file)


def register_blob_datastore(workspace: Workspace, folder: Path, container: str) -> None:
    """``az ml datastore create`` of a blob datastore named after ``container`` (its file written in ``folder``)."""
    from azbai.local.azurite import DEV_ACCOUNT
    from azbai.ml.registry import Registry

    file = folder / "datastore.yml"
    file.write_text(
        f"type: azure_blob\nname: {container}\naccount_name: {DEV_ACCOUNT}\ncontainer_name: {container}\n"
    )
    Registry(workspace).create_datastore(file)


def run_v2(workspace: Workspace, file: Path, **options: Any) -> Any:
    """``azbai ml job create -f FILE`` in this process, to the job's end."""
    from azbai.errors import MlJobFailed
    from azbai.ml.service import create_job, log_files

    try:
        return create_job(workspace, file, wait=True, **options)
    except MlJobFailed as exc:
        name = str(exc).split()[1]
        logs = "".join(f"\n--- {p.name}\n{p.read_text()[-2000:]}" for p in log_files(workspace, name))
        exc.add_note(f"the job's logs:{logs}")
        raise
