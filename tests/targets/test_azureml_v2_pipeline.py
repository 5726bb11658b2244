"""Pipeline files as Azure ML v2 pipelines: command and parallel components, data between steps, inputs, schedule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import azbai
from azbai.facade import render_files
from azbai.plan.model import ParallelStep, Plan
from azbai.targets.azureml_v2 import build_entities
from azbai.targets.azureml_v2 import render as v2
from tests.conftest import DATA, ROOT
from tests.targets.test_azureml_v2 import check_golden, expected_data

STYLE = ROOT / "recipes/style-transfer"
PIPELINE = DATA / "pipeline"


@pytest.fixture(scope="module")
def aml() -> Any:
    """azure-ai-ml, imported once for the module (~2 s)."""
    return pytest.importorskip("azure.ai.ml")


def assert_pipeline_matches_plan(pipeline: Any, plan: Plan) -> None:
    """Each node against its plan step: data modes and paths, bindings, parallel settings, computes."""
    assert pipeline.type == "pipeline"
    assert list(pipeline.jobs) == [v2.ident(s.name) for s in plan.steps]
    producers = {d.name: v2.ident(d.producer) for d in plan.pipeline_data}
    for step in plan.steps:
        node = pipeline.jobs[v2.ident(step.name)]
        assert node.compute == (step.compute if step.compute != plan.compute.name else None)
        if isinstance(step, ParallelStep):
            assert node.type == "parallel"
            component = node.component
            assert int(component.mini_batch_size) == step.mini_batch_size
            assert component.max_concurrency_per_instance == step.process_count_per_node
            assert component.error_threshold == step.error_threshold
            assert component.retry_settings.max_retries == step.max_retries
            assert component.retry_settings.timeout == step.run_invocation_timeout
            assert component.resources.instance_count == step.node_count
            assert component.task.entry_script == step.entry_script
            assert Path(component.task.code).name == step.name
            assert component.input_data == f"${{{{inputs.{v2.ident(step.input)}}}}}"
            assert node.inputs[v2.ident(step.input)]._data == (
                f"${{{{parent.jobs.{producers[step.input]}.outputs.{v2.ident(step.input)}}}}}"
            )
            assert set(component.outputs) == {v2.ident(step.output)}
            continue
        assert node.type == "command"
        assert node.resources.instance_count == step.job.node_count
        assert (node.limits.timeout if node.limits else None) == step.job.max_wall_clock_seconds
        references = {r.name for r in plan.data_references}
        for name in step.data_references:
            key = v2.ident(name)
            if name in references:
                direction, mode, path = expected_data(plan, step)[key]
                bound = (node.inputs if direction == "inputs" else node.outputs)[key]
                assert (bound.mode, bound.path) == (mode, path)
            elif name in producers and producers[name] != v2.ident(step.name):
                assert node.inputs[key]._data == f"${{{{parent.jobs.{producers[name]}.outputs.{key}}}}}"
            elif name in producers:
                assert key in node.component.outputs
            else:  # a data-path parameter
                assert node.inputs[key]._data == f"${{{{parent.inputs.{key}}}}}"
                assert node.component.inputs[key].mode == "download"
            assert f"--data {name} " in node.component.command
    for parameter in plan.parameters:
        assert v2.ident(parameter.name) in pipeline.inputs


def test_the_style_transfer_recipe_as_a_v2_pipeline(tmp_path: Path, aml: Any) -> None:
    result = azbai.migrate(STYLE / "pipeline.json", tmp_path / "out", storage_account="mystorage")
    entities = build_entities(tmp_path / "out")
    pipeline = entities["job"]
    assert_pipeline_matches_plan(pipeline, result.plan)
    # split → the parallel style step over the split's frames → stitch after it, with the split's metadata
    style = pipeline.jobs["style"]
    assert style.inputs["frames"]._data == "${{parent.jobs.split.outputs.frames}}"
    assert style.component.task.program_arguments == "--style ${{inputs.style}}"
    assert style.inputs["style"]._data == "${{parent.inputs.style}}"
    stitch = pipeline.jobs["stitch"]
    assert stitch.inputs["styled"]._data == "${{parent.jobs.style.outputs.styled}}"
    assert stitch.inputs["meta"]._data == "${{parent.jobs.split.outputs.meta}}"
    assert stitch.outputs["output_video"].mode == "upload"
    assert (
        "/experiments/style-transfer/jobs/style-transfer/${{name}}/outputs"
        in stitch.outputs["output_video"].path
    )
    # the entry script travels with the parallel step, as v1's snapshot
    assert (tmp_path / "out/snapshot/style/style_entry.py").is_file()
    video = pipeline.inputs["video"]._data
    assert (video.type, video.mode, video.path) == (
        "uri_file", "download", "azureml://datastores/media_blob/paths/incoming/clip.mp4",
    )  # fmt: skip
    assert pipeline.inputs["style"]._data == "19"
    # the storage trigger: a recurrence at the polling interval, creating this pipeline
    schedule = entities["schedule"]
    assert type(schedule.trigger).__name__ == "RecurrenceTrigger"
    assert (schedule.trigger.frequency, schedule.trigger.interval) == ("minute", 1)
    assert schedule.create_job is pipeline
    assert entities["datastores"]["media_blob"].account_name == "mystorage"
    assert {c.name: c.size for c in entities["computes"].values()} == {
        "gpu-cluster": "STANDARD_NC4AS_T4_V3", "cpu-cluster": "STANDARD_D2_V3",
    }  # fmt: skip
    report = (tmp_path / "out/MIGRATION.md").read_text()
    assert "Event Grid" in report and "--set inputs.video.path=" in report


def test_a_pipeline_with_parameters_and_a_parallel_step(tmp_path: Path, aml: Any) -> None:
    result = azbai.migrate(PIPELINE / "parallel.json", tmp_path / "out")
    entities = build_entities(tmp_path / "out")
    pipeline = entities["job"]
    assert_pipeline_matches_plan(pipeline, result.plan)
    produce = pipeline.jobs["produce"]
    # the string parameter reaches the launcher (GREETING={parameters.greeting}) and the entry script
    assert "--param greeting ${{inputs.greeting}}" in produce.component.command
    assert produce.inputs["greeting"]._data == "${{parent.inputs.greeting}}"
    assert pipeline.jobs["shout"].component.task.program_arguments == "--suffix ${{inputs.greeting}}"
    assert pipeline.inputs["text"]._data.type == "uri_file"


def test_a_pipeline_of_two_jobs_with_a_trigger(tmp_path: Path, aml: Any) -> None:
    result = azbai.migrate(PIPELINE / "pipeline.json", tmp_path / "out", target="v2")
    entities = build_entities(tmp_path / "out")
    assert_pipeline_matches_plan(entities["job"], result.plan)
    assert list(entities["job"].jobs) == ["produce", "consume"]
    assert entities["schedule"].trigger.interval == result.plan.trigger.polling_interval_minutes


@pytest.mark.parametrize(
    ("name", "source"),
    [("style-transfer", STYLE / "pipeline.json"), ("words-parallel", PIPELINE / "parallel.json")],
)
def test_pipeline_golden(name: str, source: Path, update_golden: bool) -> None:
    plan = azbai.load(source)
    check_golden(name, render_files(plan, source.parent, target="v2"), update_golden)


def test_submit_py_dry_run_for_a_pipeline(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "azbai", "migrate", str(STYLE / "pipeline.json"), "-o", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    dry = subprocess.run(
        [sys.executable, str(tmp_path / "v2/submit.py"), "--dry-run", "--json"],
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert dry.returncode == 0, dry.stderr[-2000:]
    summary = json.loads(dry.stdout)
    assert list(summary["job"]["jobs"]) == ["split", "style", "stitch"]
    assert summary["job"]["jobs"]["style"]["type"] == "parallel"
    assert summary["schedule"] == ["style_transfer_trigger", "RecurrenceTrigger"]
    assert summary["job"]["inputs"] == ["style", "video"]


def test_the_round_trip_oracle_sees_a_changed_node(tmp_path: Path, aml: Any) -> None:
    from azbai.targets.azureml_v2.entities import absolute_code, comparable

    azbai.migrate(STYLE / "pipeline.json", tmp_path / "out", target="v2")
    folder = tmp_path / "out/v2"
    first, second = (aml.load_job(folder / "pipeline.yml") for _ in range(2))
    for job in (first, second):
        absolute_code(job, folder)
    assert comparable(first) == comparable(second)
    assert Path(comparable(first)["jobs"]["style"]["component"]["task"]["code"]).is_absolute()
    second.jobs["style"].component.mini_batch_size = 9
    assert comparable(first) != comparable(second)
    second = aml.load_job(folder / "pipeline.yml")
    absolute_code(second, folder)
    second.jobs["stitch"].outputs["output_video"].mode = "rw_mount"
    assert comparable(first) != comparable(second)
