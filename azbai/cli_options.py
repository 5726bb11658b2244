"""Options several ``azbai`` commands share, spelled as the Batch AI CLI spelled them.

:func:`source_options` adds them to a command and hands it one :class:`~azbai.facade.SourceOptions` as
``source``, so no command re-declares or re-assembles them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import click

from azbai.facade import SourceOptions
from azbai.source.diagnostics import Diagnostic

_READING = (
    click.option("--cluster", type=click.Path(dir_okay=False), help="The cluster.json the job ran on."),
    click.option("--merge", multiple=True, type=click.Path(dir_okay=False), help="A fragment to merge in."),
    click.option(
        "--mount",
        "mounts",
        multiple=True,
        help="A cluster mount the job uses: NAME=afs://ACCOUNT/SHARE or NAME=blob://ACCOUNT/CONTAINER.",
    ),
    click.option(
        "--storage-account-name",
        "storage_account",
        help="Replaces <AZURE_BATCHAI_STORAGE_ACCOUNT> (else $AZURE_BATCHAI_STORAGE_ACCOUNT).",
    ),
    click.option(
        "--storage-account-key",
        "storage_key",
        help="Replaces <AZURE_BATCHAI_STORAGE_KEY> (else $AZURE_BATCHAI_STORAGE_KEY). Never written anywhere.",
    ),
)

_MIGRATION = (
    click.option(
        "--vm-size", help="The AmlCompute VM size (default: the current size replacing the Batch AI one)."
    ),
    click.option("--max-nodes", type=click.IntRange(min=1), help="The cluster's maximum node count."),
    click.option(
        "--image", help="The step's docker image (default: the job's, or a current one for retired images)."
    ),
    click.option(
        "--keep-image", is_flag=True, help="Keep the job's image even when it is a retired framework image."
    ),
    click.option(
        "--inputs",
        type=click.Choice(["mount", "download"]),
        default="mount",
        show_default=True,
        help="How input directories reach the job.",
    ),
    click.option(
        "--outputs",
        type=click.Choice(["upload", "mount"]),
        default="upload",
        show_default=True,
        help="How output directories reach their datastore.",
    ),
)

#: the command parameters that make up the SourceOptions
_FIELDS = frozenset(f.name for f in dataclasses.fields(SourceOptions))


def source_options(*, migration: bool = False) -> Callable[[Callable[..., Any]], Any]:
    """Add the job-reading flags (and the migration's) and pass them, with the command's own ``name`` and
    ``experiment`` parameters when it has them, as one ``source=SourceOptions(...)``."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {k: kwargs.pop(k) for k in _FIELDS if k in kwargs}
            values = {k: v for k, v in given.items() if v not in (None, ())}
            return func(*args, source=SourceOptions(**values), **kwargs)

        options = _READING + (_MIGRATION if migration else ())
        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate


def print_diagnostics(diagnostics: Sequence[Diagnostic], *, source: str | None = None) -> None:
    """Print diagnostics to stderr, one per line, prefixed by their file (else ``source``)."""
    for d in diagnostics:
        click.echo(f"{d.file or source}: {d}", err=True)
