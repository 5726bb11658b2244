"""The ``azbai`` command line: a click group; each command parses, calls one library function and prints.

Errors a user can act on (:class:`~azbai.errors.AzbaiError`) print as ``Error: …`` on stderr with exit code 1 (2 for
usage errors, from click), never with a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from azbai.cli_options import job_source_options
from azbai.errors import AzbaiError, SpecError
from azbai.source.diagnostics import Diagnostic


class AzbaiGroup(click.Group):
    """A click group that turns :class:`AzbaiError` into ``Error: …`` and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SpecError as exc:
            print_diagnostics(exc.diagnostics, source=exc.source)
            errors = sum(1 for d in exc.diagnostics if d.is_error)
            click.echo(f"Error: {exc.source}: {errors} error(s); nothing was written.", err=True)
            ctx.exit(1)
        except AzbaiError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(getattr(exc, "exit_code", 1) or 1)


def print_diagnostics(diagnostics: Sequence[Diagnostic], *, source: str) -> None:
    """Print diagnostics to stderr, one per line, prefixed by the file name."""
    for d in diagnostics:
        click.echo(f"{source}: {d}", err=True)


@click.group(cls=AzbaiGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="azbai")
def main() -> None:
    """Carry Azure Batch AI jobs over to Azure Machine Learning, and run them locally."""


@main.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the diagnostics as JSON.")
@job_source_options
def validate(
    job_file: str,
    cluster_file: str | None,
    merge_files: tuple[str, ...],
    mounts: tuple[str, ...],
    as_json: bool,
    storage_account_name: str | None,
    storage_account_key: str | None,
) -> None:
    """Check a Batch AI job.json; report every problem by its JSON path."""
    from azbai.migrate import validate_files

    report = validate_files(
        job_file,
        cluster_file,
        merge_files,
        mounts,
        storage_account_name=storage_account_name,
        storage_account_key=storage_account_key,
    )
    if as_json:
        click.echo(json.dumps([{"file": f, **d.to_dict()} for f, d in report.diagnostics], indent=2))
    else:
        for source, d in report.diagnostics:
            click.echo(f"{source}: {d}", err=True)
    errors = sum(1 for _, d in report.diagnostics if d.is_error)
    warnings = len(report.diagnostics) - errors
    if not as_json:
        click.echo(
            f"{job_file}: {'invalid' if errors else 'valid'} ({errors} error(s), {warnings} warning(s))"
        )
    sys.exit(1 if errors else 0)


@main.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@click.option(
    "-o", "--output-dir", type=click.Path(file_okay=False), help="Where to write (default: migrated/<name>)."
)
@click.option("-n", "--name", help="The job name (default: from the file's folder).")
@click.option(
    "-e", "--experiment", default="batchai-migration", show_default=True, help="The Azure ML experiment."
)
@job_source_options
@click.option(
    "--vm-size", help="The AmlCompute VM size (default: the current size replacing the Batch AI one)."
)
@click.option("--max-nodes", type=click.IntRange(min=1), help="The cluster's maximum node count.")
@click.option(
    "--image", help="The docker image for the step (default: the job's, or a current one for retired images)."
)
@click.option(
    "--keep-image", is_flag=True, help="Keep the job's image even when it is a retired framework image."
)
@click.option(
    "--inputs",
    "input_mode",
    type=click.Choice(["mount", "download"]),
    default="mount",
    show_default=True,
    help="How input directories reach the job.",
)
@click.option(
    "--outputs",
    "output_mode",
    type=click.Choice(["upload", "mount"]),
    default="upload",
    show_default=True,
    help="How output directories reach their datastore.",
)
@click.option(
    "--target",
    type=click.Choice(["v1", "v2", "all"]),
    default="all",
    show_default=True,
    help="Azure ML SDK v1 code, SDK v2 / CLI v2 YAML (v2/), or both.",
)
def migrate(job_file: str, output_dir: str | None, **kwargs: Any) -> None:
    """Translate a Batch AI job.json into Azure ML: SDK v1 pipeline.py and notebook, v2/ YAML, MIGRATION.md."""
    from azbai.migrate import migrate_file

    result = migrate_file(job_file, output_dir, **kwargs)
    for source, d in result.diagnostics:
        click.echo(f"{source}: {d}", err=True)
    for note in result.plan.notes:
        click.echo(f"{note.severity.value}: {note.field}: {note.message}", err=True)
    for path in result.files:
        click.echo(f"wrote {path}")
    if kwargs.get("target") != "v2":
        click.echo(f"next: python {Path(result.output_dir) / 'pipeline.py'} --dry-run")
    if kwargs.get("target") != "v1":
        click.echo(f"next: python {Path(result.output_dir) / 'v2' / 'submit.py'} --dry-run")


from azbai.cli_storage import storage  # noqa: E402

main.add_command(storage)

from azbai.cli_job import job  # noqa: E402

main.add_command(job)

from azbai.cli_pipeline import pipeline  # noqa: E402

main.add_command(pipeline)
