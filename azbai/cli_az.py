"""``azbai az ARGS…``: the az CLI's ``group``, ``storage`` and ``batchai`` commands, as users' scripts wrote them.

    azbai az batchai job create -n job1 -c nc6 -g rg -w ws -e exp -f job.json --storage-account-name mystore
    azbai az batchai job show -n job1 -g rg -w ws -e exp --query executionState -o tsv
    eval "$(azbai az --alias)"        # then `az batchai …` in a script runs here

The arguments are passed through unparsed (az's flag names and errors, not click's); errors print as ``Error: …``
(usage errors as az printed them, exit code 2), never with a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

from azbai.local.workspace import Workspace


@contextmanager
def _os_errors() -> Iterator[None]:
    """The file system's errors (a file a command names, the workspace) as ``Error: …``, not a traceback."""
    try:
        yield
    except OSError as exc:
        from azbai.errors import AzbaiError

        where = f": {exc.filename}" if exc.filename else ""
        raise AzbaiError(f"{exc.strerror or exc}{where}") from exc


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        from azbai.errors import AzError

        raise AzError("Unable to prompt for confirmation as no tty available. Use --yes.")
    return click.confirm(question, default=False, err=True)


@click.command(
    "az",
    context_settings={
        "ignore_unknown_options": True,
        "allow_extra_args": True,
        "allow_interspersed_args": False,
        "help_option_names": [],
    },
    add_help_option=False,
)
@click.option("--alias", is_flag=True, help="Print the shell function `az` (for eval) and exit.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def az(alias: bool, args: tuple[str, ...]) -> None:
    """Run `az group|storage|batchai …` commands locally, with az's own flags (`azbai az batchai -h`).

    The local workspace is $AZBAI_WORKSPACE, else ./.azbai (`--workspace` is Batch AI's own flag here).
    """
    from azbai.az import Context, run
    from azbai.az.alias import alias_script

    if alias:
        click.echo(alias_script(), nl=False)
        return
    if not args:
        args = ("--help",)
    ctx = Context(Workspace.resolve(), confirm=_confirm)
    with _os_errors():
        try:
            outcome = run(list(args), ctx)
        finally:
            for note in ctx.notes:
                click.echo(f"WARNING: {note}", err=True)
            ctx.notes.clear()
        if outcome.stream is not None:
            for chunk in outcome.stream:
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
    if outcome.stream is None and outcome.text:
        click.echo(outcome.text, nl=False)
    for note in outcome.notes:
        click.echo(f"WARNING: {note}", err=True)
    if outcome.exit_code:
        sys.exit(outcome.exit_code)
