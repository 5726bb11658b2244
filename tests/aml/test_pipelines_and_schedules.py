"""Pipelines submitted as experiments, and datastore-triggered schedules (locally a watcher), with the CLI on top."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pytest
from click.testing import CliRunner

from azbai.aml import Datastore, Experiment, PipelineRun, Run, Schedule, Workspace
from azbai.cli import main
from azbai.errors import JobError, PipelineError, PlanError
from azbai.facade import load
from azbai.local.azurite import DEV_ACCOUNT
from azbai.local.stores import open_store
from tests.aml.conftest import unique
from tests.conftest import DATA

pytestmark = pytest.mark.azurite
PIPELINE = DATA / "pipeline"


@pytest.fixture
def pipeline_ws(ws: Workspace) -> Workspace:
    """The module's workspace with the test pipeline's scripts and its default input."""
    local = ws.local_workspace()
    scripts = open_store(local, DEV_ACCOUNT, share="scripts")
    for name in ("produce.py", "consume.py"):
        scripts.upload_file(PIPELINE / name, name)
    open_store(local, DEV_ACCOUNT, container="inbox").write_bytes("incoming/words.txt", b"alpha beta\n")
    return ws


def produced(ws: Workspace) -> list[str]:
    logs = open_store(ws.local_workspace(), DEV_ACCOUNT, share="logs")
    return [e.path for e in logs.list() if e.path.endswith("/result/joined.txt")]


def test_a_pipeline_plan_runs_as_a_pipeline_run_with_step_runs(pipeline_ws: Workspace) -> None:
    plan = load(PIPELINE / "pipeline.json")
    experiment = Experiment(pipeline_ws, "pipes")
    greeting = unique("hi")  # a parameter no earlier run had: no step is reused
    run = experiment.submit(plan, pipeline_parameters={"greeting": greeting}, base_dir=PIPELINE)
    assert isinstance(run, PipelineRun)
    shown = io.StringIO()
    details = run.wait_for_completion(show_output=True, output=shown)
    assert details["status"] == "Completed" and details["parameters"]["greeting"] == greeting
    assert "step produce: succeeded" in shown.getvalue() and "step consume: succeeded" in shown.getvalue()
    steps = run.get_steps()
    assert [type(s) for s in steps] == [Run, Run]
    assert [s.get_status() for s in steps] == ["Completed", "Completed"]
    assert any(name.startswith("azureml-logs/") for name in steps[0].get_file_names())
    assert run.get_file_names() == []
    with pytest.raises(JobError, match="its steps' runs have the files"):
        run.download_file("azureml-logs/stdout.txt")
    with pytest.raises(PlanError, match="has no parameter nope"):
        experiment.submit(plan, pipeline_parameters={"nope": "1"}, base_dir=PIPELINE)


def test_the_schedule_of_a_pipeline_file_fires_for_new_blobs(pipeline_ws: Workspace) -> None:
    path = unique("in")
    schedule = Schedule.create(
        pipeline_ws, "words-trigger", PIPELINE / "pipeline.json", path_on_datastore=path
    )
    assert isinstance(schedule, Schedule)
    assert (schedule.datastore_name, schedule.path_on_datastore) == (schedule.trigger.datastore, path)
    assert (schedule.polling_interval, schedule.data_path_parameter_name) == (1, "text")
    inbox = open_store(pipeline_ws.local_workspace(), DEV_ACCOUNT, container="inbox")
    inbox.write_bytes(f"{path}/old.txt", b"already there\n")
    assert schedule.poll(skip_existing=True) == []  # as Azure ML: only blobs added after the schedule
    inbox.write_bytes(f"{path}/new.txt", b"red green\n")
    (fired,) = schedule.poll()
    assert fired.parameter == f"{path}/new.txt" and fired.run is not None and fired.run.state == "succeeded"
    schedule.disable()
    inbox.write_bytes(f"{path}/later.txt", b"blue\n")
    assert schedule.poll() == [] and schedule.status == "Disabled"
    schedule.watch(interval=0.01, max_polls=3)  # returns at once: disabled
    schedule.enable()
    fired_later = []
    schedule.watch(interval=0.01, max_polls=2, on_fired=fired_later.append)
    assert [f.blob for f in fired_later] == [f"{path}/later.txt"]


def test_a_schedule_on_a_registered_datastore(pipeline_ws: Workspace) -> None:
    drop = Datastore.register_azure_blob_container(pipeline_ws, unique("drop"), unique(), DEV_ACCOUNT)
    schedule = Schedule.create(
        pipeline_ws,
        "drops",
        load(PIPELINE / "pipeline.json"),
        datastore=drop,
        path_on_datastore="drops",
        polling_interval=2,
        data_path_parameter_name="text",
        pipeline_parameters={"greeting": unique("g")},
        base_dir=PIPELINE,
    )
    assert (schedule.datastore_name, schedule.polling_interval) == (drop.name, 2)
    drop.store().write_bytes("drops/words.txt", b"only in the drop container\n")
    (fired,) = schedule.poll()
    assert fired.run is not None and fired.run.state == "succeeded", (
        fired.error
    )  # read from the drop container


def test_schedules_refuse_what_azure_ml_refuses(pipeline_ws: Workspace, tmp_path: Path) -> None:
    plan = load(PIPELINE / "pipeline.json")
    share = Datastore.get(pipeline_ws, "workspacefilestore")
    with pytest.raises(PipelineError, match="is a file share: a schedule watches a blob container"):
        Schedule.create(pipeline_ws, "s", plan, datastore=share, data_path_parameter_name="text")
    blob = pipeline_ws.get_default_datastore()
    with pytest.raises(PipelineError, match=r"no data-path parameter 'greeting'.*data-path parameters: text"):
        Schedule.create(pipeline_ws, "s", plan, datastore=blob, data_path_parameter_name="greeting")
    no_trigger = dataclasses.replace(plan, trigger=None)
    with pytest.raises(PipelineError, match="has no trigger"):
        Schedule.create(pipeline_ws, "s", no_trigger)
    with pytest.raises(PipelineError, match="takes no recurrence"):
        Schedule.create(pipeline_ws, "s", plan, recurrence="daily")


def test_the_watch_command_is_built_on_the_schedule(pipeline_ws: Workspace, tmp_path: Path) -> None:
    root = pipeline_ws.local_workspace().root
    inbox = open_store(pipeline_ws.local_workspace(), DEV_ACCOUNT, container="inbox")
    inbox.write_bytes(f"incoming/{unique('w')}.txt", b"cli words\n")
    args = ["pipeline", "--workspace", str(root), "watch", "-f", str(PIPELINE / "pipeline.json"), "--once"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "watching inbox_blob:incoming/*.txt every 1 min" in result.output
    assert "incoming/" in result.output and " succeeded" in result.output
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "succeeded" not in again.output  # seen: not run twice
