"""``azbai ml``: Azure ML CLI v2 files run on the embedded default, with the CLI v2's names.

azbai ml job create -f job.yml|pipeline.yml [--set key=value]... [-n NAME] [--stream]
azbai ml job show|stream|cancel -n NAME
azbai ml job list
azbai ml job download -n NAME [--output-name OUTPUT] [--download-path DIR]
azbai ml datastore create -f datastores/NAME.yml [--set key=value]...
azbai ml compute create -f computes/NAME.yml
azbai ml datastore list | compute list
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import click

from azbai.local.workspace import WORKSPACE_ENV, Workspace

_name = click.option("-n", "--name", required=True, help="The job's name.")
_sets = click.option(
    "--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a field, as the CLI v2's --set does."
)


@click.group("ml")
@click.option(
    "--workspace",
    type=click.Path(file_okay=False),
    help=f"The local workspace (default: ${WORKSPACE_ENV}, else ./.azbai).",
)
@click.pass_context
def ml(ctx: click.Context, workspace: str | None) -> None:
    """Run Azure ML CLI v2 job files (command, pipeline) locally, as `az ml` would submit them."""
    ctx.obj = Workspace.resolve(workspace)


@ml.group("job")
def ml_job() -> None:
    """Create, follow and inspect local Azure ML jobs."""


@ml_job.command("create")
@click.option(
    "-f", "--file", "job_file", required=True, type=click.Path(dir_okay=False), help="The job YAML."
)
@_sets
@click.option("-n", "--name", help="The job's name (default: the file's, else a generated one).")
@click.option(
    "--stream", is_flag=True, help="Follow the job's logs until it ends (exit code 1 unless it completed)."
)
@click.pass_obj
def job_create(
    workspace: Workspace, job_file: str, sets: tuple[str, ...], name: str | None, stream: bool
) -> None:
    """Create a job from a command or pipeline YAML and run it in the background; --stream follows its logs."""
    from azbai.ml.loaders import parse_sets
    from azbai.ml.service import create_job, show_job, stream_job

    record = create_job(workspace, job_file, sets=parse_sets(sets), name=name)
    click.echo(json.dumps({"name": record.name, "type": record.type, "status": record.status}))
    if stream:
        for chunk in stream_job(workspace, record.name):
            click.echo(chunk, nl=False)
        record = show_job(workspace, record.name)
        click.echo(
            f"job {record.name}: {record.status}" + (f": {record.message}" if record.message else ""),
            err=True,
        )
        sys.exit(0 if record.status == "Completed" else 1)


@ml_job.command("show")
@_name
@click.pass_obj
def job_show(workspace: Workspace, name: str) -> None:
    """Show a job's record: status, inputs, outputs, children."""
    from azbai.ml.service import show_job

    click.echo(json.dumps(show_job(workspace, name).to_dict(), indent=2))


@ml_job.command("list")
@click.pass_obj
def job_list(workspace: Workspace) -> None:
    """List the jobs and pipelines (not their nodes)."""
    from azbai.ml.service import list_jobs

    for record in list_jobs(workspace):
        click.echo(f"{record.name}\t{record.type}\t{record.status}\t{record.display_name or ''}")


@ml_job.command("stream")
@_name
@click.pass_obj
def job_stream(workspace: Workspace, name: str) -> None:
    """Print a job's logs until it ends; exit code 1 when it did not complete."""
    from azbai.ml.service import show_job, stream_job

    for chunk in stream_job(workspace, name):
        click.echo(chunk, nl=False)
    record = show_job(workspace, name)
    click.echo(f"job {name}: {record.status}" + (f": {record.message}" if record.message else ""), err=True)
    sys.exit(0 if record.status == "Completed" else 1)


@ml_job.command("download")
@_name
@click.option("--output-name", help="Only this output (default: all, and the logs).")
@click.option("--download-path", type=click.Path(file_okay=False), default=".", show_default=True)
@click.pass_obj
def job_download(workspace: Workspace, name: str, output_name: str | None, download_path: str) -> None:
    """Download a job's logs and outputs to DOWNLOAD_PATH/NAME/."""
    from azbai.ml.service import download_job

    for path in download_job(workspace, name, Path(download_path), output_name):
        click.echo(f"downloaded {path}")


@ml_job.command("cancel")
@_name
@click.pass_obj
def job_cancel(workspace: Workspace, name: str) -> None:
    """Cancel a running job (its outputs and logs are still uploaded)."""
    from azbai.ml.service import cancel_job

    click.echo(json.dumps({"name": name, "status": cancel_job(workspace, name).status}))


@ml.group("datastore")
def ml_datastore() -> None:
    """Datastores of the local workspace."""


@ml_datastore.command("create")
@click.option(
    "-f", "--file", "file", required=True, type=click.Path(dir_okay=False), help="The datastore YAML."
)
@_sets
@click.pass_obj
def datastore_create(workspace: Workspace, file: str, sets: tuple[str, ...]) -> None:
    """Create a datastore from its YAML (credentials given with --set are accepted and never kept)."""
    from azbai.ml.loaders import parse_sets
    from azbai.ml.registry import Registry

    click.echo(
        json.dumps(dataclasses.asdict(Registry(workspace).create_datastore(Path(file), parse_sets(sets))))
    )


@ml_datastore.command("list")
@click.pass_obj
def datastore_list(workspace: Workspace) -> None:
    """List the datastores."""
    from azbai.ml.registry import Registry

    for record in Registry(workspace).datastores():
        click.echo(json.dumps(dataclasses.asdict(record)))


@ml.group("compute")
def ml_compute() -> None:
    """Computes of the local workspace (their size and instance counts are recorded)."""


@ml_compute.command("create")
@click.option(
    "-f", "--file", "file", required=True, type=click.Path(dir_okay=False), help="The compute YAML."
)
@_sets
@click.pass_obj
def compute_create(workspace: Workspace, file: str, sets: tuple[str, ...]) -> None:
    """Create a compute from its YAML."""
    from azbai.ml.loaders import parse_sets
    from azbai.ml.registry import Registry

    click.echo(
        json.dumps(dataclasses.asdict(Registry(workspace).create_compute(Path(file), parse_sets(sets))))
    )


@ml_compute.command("list")
@click.pass_obj
def compute_list(workspace: Workspace) -> None:
    """List the computes."""
    from azbai.ml.registry import Registry

    for record in Registry(workspace).computes():
        click.echo(json.dumps(dataclasses.asdict(record)))
