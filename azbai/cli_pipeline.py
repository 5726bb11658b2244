"""``azbai pipeline``: run an azbai pipeline file locally, once or whenever its storage trigger fires.

azbai pipeline run   -f pipeline.json [-p NAME=VALUE]... [--run-id ID] [--no-reuse]
azbai pipeline watch -f pipeline.json [--once] [--interval SECONDS] [--skip-existing]
azbai pipeline runs  -f pipeline.json
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from azbai.cli_options import print_diagnostics
from azbai.errors import AzbaiError
from azbai.local.workspace import WORKSPACE_ENV, Workspace

if TYPE_CHECKING:
    from azbai.facade import Loaded

_file = click.option(
    "-f",
    "--pipeline-file",
    "pipeline_file",
    required=True,
    type=click.Path(dir_okay=False),
    help="The pipeline file.",
)
_account = click.option(
    "--storage-account-name",
    help="Replaces <AZURE_BATCHAI_STORAGE_ACCOUNT> (else $AZURE_BATCHAI_STORAGE_ACCOUNT).",
)


@click.group("pipeline")
@click.option(
    "--workspace",
    type=click.Path(file_okay=False),
    help=f"The local workspace (default: ${WORKSPACE_ENV}, else ./.azbai).",
)
@click.pass_context
def pipeline(ctx: click.Context, workspace: str | None) -> None:
    """Run pipelines of Batch AI jobs and parallel steps locally."""
    ctx.obj = Workspace.resolve(workspace)


def _read(pipeline_file: str, storage_account_name: str | None) -> Loaded:
    """The pipeline file's plan; :class:`AzbaiError` for a job.json (``azbai job create`` runs those)."""
    from azbai.facade import SourceOptions, read
    from azbai.source.pipeline_spec import is_pipeline_file

    if not is_pipeline_file(pipeline_file):
        raise AzbaiError(
            f"{pipeline_file} is not a pipeline file (no 'steps'): run a job.json with azbai job create"
        )
    return read(pipeline_file, SourceOptions(storage_account=storage_account_name))


def _runner(
    workspace: Workspace, pipeline_file: str, storage_account_name: str | None, reuse: bool = True
) -> Any:
    from azbai.local.pipelines import PipelineRunner

    loaded = _read(pipeline_file, storage_account_name)
    print_diagnostics([d for d in loaded.diagnostics if d.code != "unresolved-placeholder"])
    return PipelineRunner(workspace, loaded.plan, loaded.base_dir, reuse=reuse)


def _progress(step: str, state: str) -> None:
    click.echo(f"step {step}: {state}", err=True)


@pipeline.command()
@_file
@click.option("-p", "--parameter", "parameters", multiple=True, help="NAME=VALUE (repeatable).")
@click.option("--run-id", help="A name for the run (default: run-<time>-<random>).")
@click.option("--no-reuse", is_flag=True, help="Run every step even when nothing changed.")
@_account
@click.pass_obj
def run(
    workspace: Workspace,
    pipeline_file: str,
    parameters: tuple[str, ...],
    run_id: str | None,
    no_reuse: bool,
    storage_account_name: str | None,
) -> None:
    """Run the pipeline once, step after step."""
    values = {}
    for item in parameters:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint="--parameter")
        values[name] = value
    runner = _runner(workspace, pipeline_file, storage_account_name, reuse=not no_reuse)
    for note in runner.plan.notes:
        if note.code == "parameter-in-command":  # bash would see {parameters.NAME} as written
            click.echo(f"{pipeline_file}: warning: {note.field}: {note.message} [{note.code}]", err=True)
    result = runner.run(values, run_id=run_id, progress=_progress)
    click.echo(f"pipeline {result.pipeline!r} run {result.run_id} {result.state}: {result.directory}")


@pipeline.command()
@_file
@click.option("--once", is_flag=True, help="Poll once and stop.")
@click.option(
    "--interval", type=float, help="Seconds between polls (default: the trigger's pollingIntervalMinutes)."
)
@click.option(
    "--skip-existing", is_flag=True, help="Only blobs added after the first poll start runs (as Azure ML)."
)
@_account
@click.pass_obj
def watch(
    workspace: Workspace,
    pipeline_file: str,
    once: bool,
    interval: float | None,
    skip_existing: bool,
    storage_account_name: str | None,
) -> None:
    """Start a run for each new blob under the pipeline's trigger path."""
    from azbai.aml.schedule import Schedule
    from azbai.aml.workspace import Workspace as AmlWorkspace
    from azbai.local.trigger import Fired

    loaded = _read(pipeline_file, storage_account_name)
    schedule = Schedule.create(
        AmlWorkspace(workspace.root), f"{loaded.plan.name}-trigger", loaded.plan, base_dir=loaded.base_dir
    )
    failures = []

    def report(fired: Fired) -> None:
        if fired.run is not None:
            click.echo(f"{fired.blob}: run {fired.run.run_id} {fired.run.state}")
        else:
            failures.append(fired)
            click.echo(f"{fired.blob}: {fired.error}", err=True)

    trigger = schedule.trigger
    interval_text = f"{interval:g} s" if interval is not None else f"{trigger.polling_interval_minutes} min"
    click.echo(
        f"watching {trigger.datastore}:{trigger.path_on_datastore}/{trigger.pattern} every {interval_text}",
        err=True,
    )
    schedule.watch(
        interval=interval, max_polls=1 if once else None, skip_existing=skip_existing, on_fired=report
    )
    if once and failures:
        raise AzbaiError(f"{len(failures)} trigger(s) did not run")


@pipeline.command()
@_file
@_account
@click.pass_obj
def runs(workspace: Workspace, pipeline_file: str, storage_account_name: str | None) -> None:
    """List the local runs of a pipeline."""
    from azbai.local.pipelines import list_runs

    for r in list_runs(workspace, _read(pipeline_file, storage_account_name).plan.name):
        steps = ", ".join(f"{name}:{s.state}" for name, s in r.steps.items())
        click.echo(f"{r.run_id:<36} {r.state:<10} {r.started}  {steps}")
