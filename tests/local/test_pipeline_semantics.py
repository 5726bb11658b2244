"""Issue 11 items 10 and 11: a trigger's "skip what is there", step reuse by the parameters a step uses, unicode
blob names, run ids that stay in the runs directory, and {parameters.NAME} in a command line."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import azbai
from azbai.errors import PipelineError
from azbai.local.azurite import DEV_ACCOUNT, Emulator
from azbai.local.pipelines import PipelineRunner, check_datastore_path
from azbai.local.stores import open_store
from azbai.local.trigger import TriggerWatcher
from azbai.local.workspace import Workspace
from tests.conftest import DATA

pytestmark = pytest.mark.azurite
PIPELINE = DATA / "pipeline"


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[Workspace]:
    workspace = Workspace(tmp_path / "ws")
    emulator = Emulator(workspace)
    emulator.ensure()
    scripts = open_store(workspace, DEV_ACCOUNT, share="scripts")
    for name in ("produce.py", "consume.py"):
        scripts.upload_file(PIPELINE / name, name)
    try:
        yield workspace
    finally:
        emulator.stop()


def variant(tmp_path: Path, change: dict[str, object] | None = None, command: str | None = None) -> Path:
    folder = tmp_path / "pipeline"
    shutil.copytree(PIPELINE, folder)
    spec = json.loads((folder / "pipeline.json").read_text())
    spec.update(change or {})
    (folder / "pipeline.json").write_text(json.dumps(spec))
    if command is not None:
        job = json.loads((folder / "produce.job.json").read_text())
        job["properties"]["customToolkitSettings"]["commandLine"] = command
        (folder / "produce.job.json").write_text(json.dumps(job))
    return folder / "pipeline.json"


def test_item10_skip_existing_skips_even_after_an_earlier_watcher(workspace: Workspace) -> None:
    inbox = open_store(workspace, DEV_ACCOUNT, container="inbox")
    plan = azbai.load(PIPELINE / "pipeline.json")
    inbox.write_bytes("incoming/old.txt", b"old words\n")
    (first,) = TriggerWatcher(workspace, plan, PIPELINE).poll()  # an earlier watcher, its memory kept
    assert first.run is not None
    inbox.write_bytes("incoming/also-old.txt", b"there before the new watcher\n")
    watcher = TriggerWatcher(workspace, plan, PIPELINE)
    assert watcher.poll(skip_existing=True) == []  # nothing runs: it was there already
    assert watcher.poll() == []
    inbox.write_bytes("incoming/new.txt", b"new words\n")
    (fired,) = watcher.poll()
    assert fired.blob == "incoming/new.txt" and fired.run is not None and fired.run.state == "succeeded"


def test_item11_a_step_is_reused_when_a_parameter_it_does_not_use_changes(
    workspace: Workspace, tmp_path: Path
) -> None:
    parameters = json.loads((PIPELINE / "pipeline.json").read_text())["parameters"]
    path = variant(tmp_path, {"parameters": [*parameters, {"name": "unused", "default": "a"}]})
    open_store(workspace, DEV_ACCOUNT, container="inbox").write_bytes("incoming/words.txt", b"one two\n")
    plan = azbai.load(path)
    PipelineRunner(workspace, plan, path.parent).run({"unused": "a"})
    again = PipelineRunner(workspace, plan, path.parent).run({"unused": "b"})
    assert [s.state for s in again.steps.values()] == ["reused", "reused"]
    changed = PipelineRunner(workspace, plan, path.parent).run({"unused": "b", "greeting": "hey"})
    assert changed.steps["produce"].state == "succeeded"  # one it uses reruns it


def test_item11_a_unicode_blob_name_fires_once(workspace: Workspace) -> None:
    assert check_datastore_path("incoming/vidéo ñ 日本.txt", what="t") == "incoming/vidéo ñ 日本.txt"
    inbox = open_store(workspace, DEV_ACCOUNT, container="inbox")
    inbox.write_bytes("incoming/vidéo.txt", b"unicode words\n")
    (fired,) = TriggerWatcher(workspace, azbai.load(PIPELINE / "pipeline.json"), PIPELINE).poll()
    assert fired.error is None and fired.run is not None and fired.run.state == "succeeded"


@pytest.mark.parametrize("run_id", ["../../x", "a/b", "..", ".hidden"])
def test_item11_a_run_id_cannot_leave_the_runs_directory(workspace: Workspace, run_id: str) -> None:
    runner = PipelineRunner(workspace, azbai.load(PIPELINE / "pipeline.json"), PIPELINE)
    with pytest.raises(PipelineError, match="invalid run id"):
        runner.run(run_id=run_id)
    assert not (workspace.root / "x").exists() and not (workspace.pipelines_dir / "x").exists()


def test_item11_a_parameter_in_a_command_line_is_a_warning(tmp_path: Path) -> None:
    path = variant(
        tmp_path,
        command="python $AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/produce.py {parameters.greeting} $AZ_BATCHAI_OUTPUT_WORDS",
    )
    found = [d for d in azbai.validate(path).diagnostics if d.code == "parameter-in-command"]
    assert found and "{parameters.greeting}" in found[0].message


def test_item11_pipeline_run_prints_the_parameter_in_command_warning(
    workspace: Workspace, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    from azbai.cli import main

    path = variant(
        tmp_path,
        command="python $AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/produce.py $AZ_BATCHAI_INPUT_SOURCE "
        "$AZ_BATCHAI_OUTPUT_WORDS {parameters.greeting}",
    )
    open_store(workspace, DEV_ACCOUNT, container="inbox").write_bytes("incoming/words.txt", b"one\n")
    result = CliRunner().invoke(
        main, ["pipeline", "--workspace", str(workspace.root), "run", "-f", str(path)]
    )
    assert "[parameter-in-command]" in result.output, result.output
