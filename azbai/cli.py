"""The ``azbai`` command line: a click group; each command parses, calls one library function and prints.

Errors a user can act on (:class:`~azbai.errors.AzbaiError`) print as ``Error: …`` on stderr with exit code 1 (2 for
usage errors, from click), never with a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from azbai.cli_options import print_diagnostics, source_options
from azbai.errors import AzbaiError, SpecError
from azbai.facade import FILE_NOTE_CODES, TARGETS, SourceOptions


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


@click.group(cls=AzbaiGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="azbai")
def main() -> None:
    """Carry Azure Batch AI jobs over to Azure Machine Learning, and run them locally."""


@main.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the diagnostics as JSON.")
@source_options()
def validate(job_file: str, as_json: bool, source: SourceOptions) -> None:
    """Check a Batch AI job.json (or an azbai pipeline file and its jobs); report every problem by JSON path."""
    from azbai.facade import check

    report = check(job_file, source)
    if as_json:
        click.echo(json.dumps([d.to_dict() for d in report.diagnostics], indent=2))
    else:
        print_diagnostics(report.diagnostics)
        errors, warnings = len(report.errors), len(report.warnings)
        click.echo(
            f"{job_file}: {'valid' if report.ok else 'invalid'} ({errors} error(s), {warnings} warning(s))"
        )
    sys.exit(0 if report.ok else 1)


@main.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@click.option(
    "-o", "--output-dir", type=click.Path(file_okay=False), help="Where to write (default: migrated/<name>)."
)
@click.option("-n", "--name", help="The job name (default: from the file's folder).")
@click.option("-e", "--experiment", help="The Azure ML experiment (default: batchai-migration).")
@click.option(
    "--target",
    type=click.Choice(["all", *TARGETS]),
    default="all",
    show_default=True,
    help="What to write: Azure ML SDK v1 code, CLI v2 YAML and azure-ai-ml code, or both.",
)
@source_options(migration=True)
def migrate(job_file: str, output_dir: str | None, target: str, source: SourceOptions) -> None:
    """Translate a Batch AI job.json or an azbai pipeline file for Azure ML: plan.json, Azure ML code, MIGRATION.md."""
    from azbai.facade import migrate as migrate_source
    from azbai.facade import options_dict

    result = migrate_source(job_file, output_dir, target=target, **options_dict(source))
    print_diagnostics(result.diagnostics)
    for note in result.plan.notes:
        if note.code in FILE_NOTE_CODES:
            continue  # already among the diagnostics
        click.echo(f"{note.severity.value}: {note.field}: {note.message} [{note.code}]", err=True)
    for path in result.files:
        click.echo(f"wrote {path}")
    if target != "v2":
        click.echo(f"next: python {Path(result.output_dir) / 'pipeline.py'} --dry-run")
    if target != "v1":
        click.echo(f"next: python {Path(result.output_dir) / 'v2' / 'submit.py'} --dry-run")


from azbai.cli_storage import storage  # noqa: E402

main.add_command(storage)

from azbai.cli_job import job  # noqa: E402

main.add_command(job)

from azbai.cli_pipeline import pipeline  # noqa: E402

main.add_command(pipeline)

from azbai.cli_az import az  # noqa: E402

main.add_command(az)

from azbai.cli_ml import ml  # noqa: E402

main.add_command(ml)
