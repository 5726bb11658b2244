"""``azbai job``: local jobs, named as ``az batchai job`` named them.

azbai job create -f job.json -n NAME [-e EXPERIMENT] [--storage-account-name A] [--wait] [--env NAME]...
azbai job show|wait|terminate|delete -n NAME [-e EXPERIMENT] [--force]
azbai job list [-e EXPERIMENT]
azbai job file list   -n NAME [-d stdouterr|OUTPUT_ID]
azbai job file stream -n NAME -f stdout.txt|stderr.txt|FILE [-d …]
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import click

from azbai.cli_options import print_diagnostics, source_options
from azbai.convert import DEFAULT_EXPERIMENT
from azbai.facade import SourceOptions
from azbai.local.workspace import WORKSPACE_ENV, Workspace

_name = click.option("-n", "--name", required=True, help="The job's name.")
_experiment = click.option("-e", "--experiment", help="The job's experiment (needed when names repeat).")


@click.group("job")
@click.option(
    "--workspace",
    type=click.Path(file_okay=False),
    help=f"The local workspace (default: ${WORKSPACE_ENV}, else ./.azbai).",
)
@click.pass_context
def job(ctx: click.Context, workspace: str | None) -> None:
    """Run Batch AI jobs locally: Azurite for blob storage, directories for file shares, local processes."""
    ctx.obj = Workspace.resolve(workspace)


@job.command()
@click.option(
    "-f", "--config-file", "job_file", required=True, type=click.Path(dir_okay=False), help="The job.json."
)
@click.option("-n", "--name", "job_name", required=True, help="The job's name.")
@click.option(
    "-e",
    "--experiment",
    "job_experiment",
    default=DEFAULT_EXPERIMENT,
    show_default=True,
    help="The job's experiment.",
)
@source_options()
@click.option("--wait", is_flag=True, help="Wait for the job to end (exit code non-zero when it fails).")
@click.option(
    "--env",
    "env_names",
    multiple=True,
    metavar="NAME[=VALUE]",
    help="Pass a variable of this shell (or VALUE) to the job; a job gets only Batch AI's environment otherwise.",
)
@click.pass_obj
def create(
    workspace: Workspace,
    job_file: str,
    job_name: str,
    job_experiment: str,
    wait: bool,
    env_names: tuple[str, ...],
    source: SourceOptions,
) -> None:
    """Create a job from a Batch AI job.json and run it."""
    import os

    from azbai.facade import read, secret_values
    from azbai.local.service import create_job

    loaded = read(job_file, dataclasses.replace(source, name=job_name, experiment=job_experiment))
    print_diagnostics(loaded.diagnostics)  # the warnings `azbai validate` prints for the same file
    env = {}
    for item in env_names:
        name, sep, value = item.partition("=")
        if not sep and name not in os.environ:
            raise click.UsageError(f"--env {name}: no such variable in this shell")
        env[name] = value if sep else os.environ[name]
    record = create_job(workspace, loaded.plan, wait=wait, secrets=secret_values(loaded.plan), env=env)
    click.echo(json.dumps(record.to_dict(), indent=2))


@job.command()
@_name
@_experiment
@click.pass_obj
def show(workspace: Workspace, name: str, experiment: str | None) -> None:
    """Show a job's state, times, exit code and directories."""
    click.echo(json.dumps(_record(workspace, name, experiment).to_dict(), indent=2))


@job.command("list")
@_experiment
@click.pass_obj
def list_jobs(workspace: Workspace, experiment: str | None) -> None:
    """List the jobs."""
    from azbai.local.jobs import JobBook

    records = JobBook(workspace).list(experiment) if workspace.jobs_dir.is_dir() else []
    click.echo(f"{'Name':<28} {'Experiment':<22} {'State':<11} {'Exit':>4}  Tool")
    for r in records:
        code = "" if r.exit_code is None else str(r.exit_code)
        click.echo(f"{r.name:<28} {r.experiment:<22} {r.state:<11} {code:>4}  {r.tool_type}")


@job.command()
@_name
@_experiment
@click.option("--timeout", type=float, help="Give up after this many seconds.")
@click.pass_obj
def wait(workspace: Workspace, name: str, experiment: str | None, timeout: float | None) -> None:
    """Wait for a job to end; the exit code is non-zero when it failed."""
    from azbai.local.service import wait_job

    record = wait_job(_record(workspace, name, experiment), timeout=timeout)
    click.echo(f"job {record.name!r} {record.state} (exit code {record.exit_code})")


@job.command()
@_name
@_experiment
@click.pass_obj
def terminate(workspace: Workspace, name: str, experiment: str | None) -> None:
    """Stop a running job (its logs and partial outputs are kept)."""
    from azbai.local.service import terminate_job

    record = terminate_job(_record(workspace, name, experiment))
    click.echo(f"job {record.name!r} {record.state}")


@job.command()
@_name
@_experiment
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--force", is_flag=True, help="Delete it even when outputs are not in storage yet (they are lost)."
)
@click.pass_obj
def delete(workspace: Workspace, name: str, experiment: str | None, yes: bool, force: bool) -> None:
    """Delete a finished job's record and work directory (its outputs on shares and containers stay)."""
    from azbai.local.service import delete_job

    record = _record(workspace, name, experiment)
    if not yes:
        click.confirm(f"Delete job {record.name!r} of experiment {record.experiment!r}?", abort=True)
    delete_job(record, force=force)
    click.echo(f"deleted job {record.name!r}")


@job.group("file")
def file_group() -> None:
    """A job's stdout/stderr and output files."""


@file_group.command("list")
@_name
@_experiment
@click.option(
    "-d",
    "--output-directory-id",
    "directory",
    default="stdouterr",
    show_default=True,
    help="stdouterr or an output directory id.",
)
@click.pass_obj
def file_list(workspace: Workspace, name: str, experiment: str | None, directory: str) -> None:
    """List the files of a job directory (full paths)."""
    from azbai.local.service import list_files

    files = list_files(_record(workspace, name, experiment), directory)
    for f in files:
        click.echo(f"{f.size:>12}  {f.url}")
    if not files:
        click.echo(f"(no files in {directory} yet)", err=True)
    record = _record(workspace, name, experiment)
    if record.stage_out_error:
        click.echo(f"warning: not in storage yet (stage-out failed: {record.stage_out_error})", err=True)


@file_group.command("stream")
@_name
@_experiment
@click.option("-f", "--file-name", "file_name", required=True, help="stdout.txt, stderr.txt or another file.")
@click.option(
    "-d",
    "--output-directory-id",
    "directory",
    default="stdouterr",
    show_default=True,
    help="stdouterr or an output directory id.",
)
@click.option("--no-follow", is_flag=True, help="Print what is there and stop.")
@click.pass_obj
def file_stream(
    workspace: Workspace, name: str, experiment: str | None, file_name: str, directory: str, no_follow: bool
) -> None:
    """Print a job file, following it while the job runs."""
    from azbai.local.service import stream_file

    for chunk in stream_file(
        _record(workspace, name, experiment), file_name, directory, follow=not no_follow
    ):
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()


def _record(workspace: Workspace, name: str, experiment: str | None) -> Any:
    from azbai.local.jobs import JobBook

    return JobBook(workspace).get(name, experiment)
