"""``azbai az``: the ``az group``, ``az storage`` and ``az batchai`` commands of Batch AI users' scripts, run locally.

    result = azbai.az.run(["batchai", "job", "show", "-n", "job1", "-g", "rg", "-w", "ws", "-e", "exp",
                           "--query", "executionState"], Context(Workspace.resolve(), confirm=lambda q: False))
    result.text      # '"succeeded"\\n', as az printed it

:mod:`azbai.az.parser` reads the command line as az did, :mod:`azbai.az.commands` is the command table,
:mod:`azbai.az.storage` and :mod:`azbai.az.batchai` do the work, :mod:`azbai.az.output` prints as az printed
(``--query``, ``-o``), :mod:`azbai.az.state` keeps the local groups, workspaces, experiments and clusters, and
:mod:`azbai.az.alias` is the shell function that sends a script's ``az`` commands here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from azbai.az.context import Context, Result
from azbai.az.parser import GroupHelp, help_text, parse
from azbai.errors import AzUsageError

__all__ = ["AzUsageError", "Context", "Outcome", "Result", "run"]


@dataclass
class Outcome:
    """What ``azbai az`` prints: ``text`` (stdout) or a ``stream`` of bytes, ``notes`` (stderr), the exit code."""

    text: str = ""
    stream: Iterator[bytes] | None = None
    notes: list[str] = field(default_factory=list)
    exit_code: int = 0


def run(argv: Sequence[str], ctx: Context) -> Outcome:
    """Parse and run one az command line (the words after ``az``); :class:`~azbai.errors.AzbaiError` on failure."""
    from azbai.az.commands import TABLE
    from azbai.az.output import query, render

    parsed = parse(TABLE, argv)
    if isinstance(parsed, GroupHelp) or parsed.help:
        return Outcome(help_text(parsed))
    quiet = bool(parsed.values.get("only_show_errors"))
    for name, why in parsed.ignored:
        ctx.note(f"{name}: accepted and ignored ({why})")
    values = {
        k: v for k, v in parsed.values.items() if k not in ("output", "query", "help", "only_show_errors")
    }
    result: Result = parsed.command.handler(ctx, **values)
    if quiet:
        ctx.notes.clear()
    outcome = Outcome(stream=result.stream, notes=ctx.notes, exit_code=result.exit_code)
    if result.printed and result.stream is None:
        value = query(result.value, parsed.query)
        outcome.text = render(value, parsed.output, queried=bool(parsed.query), table=parsed.command.table)
    return outcome
