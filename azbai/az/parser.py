"""The az CLI's argument rules, for the commands azbai carries: long and short flags, defaults, az-style errors.

    >>> parse(TABLE, ["batchai", "job", "show", "-n", "job1", "-g", "rg", "-w", "ws", "-e", "exp"])
    Parsed(command=<az batchai job show>, values={'name': 'job1', ...}, output='json', query=None, ...)

Errors read as az (argparse) wrote them: ``az batchai job create: error: unrecognized arguments: --nmae`` with a
did-you-mean, ``the following arguments are required: --name/-n``, ``'jobb' is not in the 'az batchai' command
group``. They are :class:`AzUsageError` (exit code 2, as az). Flags that mean nothing locally (``-l eastus``,
``--generate-ssh-keys``, …) are accepted and reported in ``Parsed.ignored``; secret flags (``--storage-account-key``,
``--password``) are marked so that nothing writes or echoes them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from azbai.errors import AzUsageError

OUTPUTS = ("json", "jsonc", "table", "tsv", "none")


@dataclass(frozen=True)
class Flag:
    """One argument: its option strings (long first), where its value goes, and what it means locally."""

    names: tuple[str, ...]
    dest: str
    takes_value: bool = True
    required: bool = False
    default: Any = None
    convert: Callable[[str], Any] | None = None
    choices: tuple[str, ...] = ()
    #: why the flag means nothing locally (accepted, ignored, said in one line)
    ignored: str | None = None
    #: a key or password: never written, logged or echoed
    secret: bool = False
    help: str = ""

    @property
    def label(self) -> str:
        """``--name/-n``, as argparse names an argument in its errors."""
        return "/".join(self.names)


def flag(*names: str, dest: str | None = None, **options: Any) -> Flag:
    """A :class:`Flag`; ``dest`` defaults to the long name in snake case."""
    return Flag(tuple(names), dest or names[0].lstrip("-").replace("-", "_"), **options)


def switch(*names: str, dest: str | None = None, **options: Any) -> Flag:
    """A flag without a value (``--yes``)."""
    return flag(*names, dest=dest, takes_value=False, default=False, **options)


def ignored(*names: str, takes_value: bool = True, why: str = "it has no meaning locally", **kw: Any) -> Flag:
    """A flag az took that azbai accepts and ignores, with a one-line note."""
    return flag(*names, takes_value=takes_value, ignored=why, default=None if takes_value else False, **kw)


#: the global arguments of every az command
GLOBAL_FLAGS = (
    flag("--output", "-o", default="json", choices=OUTPUTS, help="Output format."),
    flag("--query", help="JMESPath query string."),
    ignored("--subscription", why="there is one local subscription"),
    ignored("--debug", takes_value=False, why="azbai's jobs log to their runner.log and launcher.log"),
    ignored("--verbose", takes_value=False, why="azbai's jobs log to their runner.log and launcher.log"),
    switch("--only-show-errors", help="Only show errors, suppressing warnings."),
    switch("--help", "-h", help="Show this help message and exit."),
)


@dataclass(frozen=True)
class Command:
    """One az command: its words, its flags, what runs it, and az's table layout for its result."""

    path: tuple[str, ...]
    flags: tuple[Flag, ...]
    handler: Callable[..., Any]
    summary: str
    #: az's table transformer for this command's result (None: az's automatic table)
    table: Callable[[Any], Any] | None = None

    @property
    def name(self) -> str:
        """``az batchai job create``."""
        return "az " + " ".join(self.path)

    def __repr__(self) -> str:
        return f"<{self.name}>"


@dataclass
class Parsed:
    """A parsed command line."""

    command: Command
    values: dict[str, Any]
    output: str = "json"
    query: str | None = None
    #: the flags given that mean nothing locally, with why
    ignored: list[tuple[str, str]] = field(default_factory=list)
    help: bool = False
    given: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class GroupHelp:
    """``az batchai -h`` or ``az batchai job``: the group's subgroups and commands."""

    path: tuple[str, ...]
    children: tuple[tuple[str, str], ...]


def parse(table: Mapping[tuple[str, ...], Command], argv: Sequence[str]) -> Parsed | GroupHelp:
    """Parse ``argv`` (the words after ``az``) against ``table``; :class:`AzUsageError` as az would refuse it."""
    argv = _globals_last(argv)
    words: list[str] = []
    for token in argv:
        if token.startswith("-"):
            break
        words.append(token)
    command, depth = _find(table, words)
    rest = list(argv[depth:])
    if command is None:
        group = tuple(words[:depth])
        if depth < len(words):
            _unknown_word(table, group, words[depth])
        return GroupHelp(group, _children(table, group))
    assert command is not None
    return _parse_flags(command, rest)


def _globals_last(argv: Sequence[str]) -> list[str]:
    """``az -o table batchai …``: global arguments before the command words move after them."""
    by_name = {name: f for f in GLOBAL_FLAGS for name in f.names}
    leading: list[str] = []
    rest = list(argv)
    while rest and rest[0].partition("=")[0] in by_name and rest[0] not in ("-h", "--help"):
        spec = by_name[rest[0].partition("=")[0]]
        take = 2 if spec.takes_value and "=" not in rest[0] else 1
        leading += rest[:take]
        rest = rest[take:]
    return rest + leading


def _find(table: Mapping[tuple[str, ...], Command], words: list[str]) -> tuple[Command | None, int]:
    for depth in range(len(words), 0, -1):
        command = table.get(tuple(words[:depth]))
        if command is not None:
            return command, depth
    depth = 0
    while depth < len(words) and any(p[: depth + 1] == tuple(words[: depth + 1]) for p in table):
        depth += 1
    return None, depth


def _children(
    table: Mapping[tuple[str, ...], Command], group: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    children: dict[str, str] = {}
    for path, command in sorted(table.items()):
        if path[: len(group)] == group and len(path) > len(group):
            word = path[len(group)]
            children.setdefault(word, command.summary if len(path) == len(group) + 1 else "(group)")
    return tuple(children.items())


def _unknown_word(table: Mapping[tuple[str, ...], Command], group: tuple[str, ...], word: str) -> None:
    choices = [name for name, _ in _children(table, group)]
    where = " ".join(("az", *group))
    message = f"az: '{word}' is not in the '{where}' command group. See '{where} --help'."
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
    if close:
        message += f"\n\nThe most similar choice to '{word}' is:\n    {close[0]}"
    raise AzUsageError(message)


def _parse_flags(command: Command, argv: list[str]) -> Parsed:
    flags = (*command.flags, *GLOBAL_FLAGS)
    by_name = {name: f for f in flags for name in f.names}
    values: dict[str, Any] = {f.dest: f.default for f in flags}
    given: set[str] = set()
    unknown: list[str] = []
    ignored_given: list[tuple[str, str]] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        name, eq, inline = token.partition("=") if token.startswith("--") else (token, "", "")
        spec = by_name.get(name)
        if spec is None:
            secret = _looks_secret(name, flags)
            unknown.append(f"{name}=***" if secret and eq else token)
            # the value of an unknown flag is unrecognised too, as argparse reports it (a key's is never echoed)
            if i + 1 < len(argv) and not argv[i + 1].startswith("-") and token.startswith("-") and not eq:
                unknown.append("***" if secret else argv[i + 1])
                i += 1
            i += 1
            continue
        if spec.takes_value:
            if eq:
                raw = inline
            elif i + 1 < len(argv):
                raw = argv[i + 1]
                i += 1
            else:
                raise AzUsageError(f"{command.name}: error: argument {spec.label}: expected one argument")
            values[spec.dest] = _convert(command, spec, raw)
        else:
            if eq:
                raise AzUsageError(
                    f"{command.name}: error: argument {spec.label}: ignored explicit argument '{inline}'"
                )
            values[spec.dest] = True
        given.add(spec.dest)
        if spec.ignored is not None and (spec.dest, spec.ignored) not in ignored_given:
            ignored_given.append((spec.names[0], spec.ignored))
        i += 1
    if values.get("help"):
        return Parsed(command, values, help=True)
    if unknown:
        message = f"{command.name}: error: unrecognized arguments: {' '.join(unknown)}"
        options = sorted(by_name)
        hints = []
        for token in unknown:
            if token.startswith("-"):
                close = difflib.get_close_matches(token.partition("=")[0], options, n=1, cutoff=0.6)
                if close:
                    hints.append(f"'{token}': did you mean '{close[0]}'?")
        if hints:
            message += "\n" + "\n".join(hints)
        raise AzUsageError(message + f"\nSee '{command.name} --help'.")
    missing = [f.label for f in command.flags if f.required and f.dest not in given]
    if missing:
        raise AzUsageError(
            f"{command.name}: error: the following arguments are required: {', '.join(missing)}"
        )
    return Parsed(command, values, values["output"], values["query"], ignored_given, False, given)


_SECRET_WORDS = ("key", "password", "secret", "sas", "token", "connection")


def _looks_secret(name: str, flags: Sequence[Flag]) -> bool:
    """Whether an unknown flag is probably a mistyped secret one (its value must not be echoed)."""
    if any(word in name.lower() for word in _SECRET_WORDS):
        return True
    secret_names = [n for f in flags if f.secret for n in f.names]
    return bool(difflib.get_close_matches(name, secret_names, n=1, cutoff=0.6))


def _convert(command: Command, spec: Flag, raw: str) -> Any:
    if spec.choices and raw not in spec.choices:
        allowed = ", ".join(f"'{c}'" for c in spec.choices)
        close = difflib.get_close_matches(raw, spec.choices, n=1)
        hint = f"\nDid you mean '{close[0]}'?" if close else ""
        raise AzUsageError(
            f"{command.name}: error: argument {spec.label}: invalid choice: '{raw}' (choose from {allowed}){hint}"
        )
    if spec.convert is None:
        return raw
    try:
        return spec.convert(raw)
    except ValueError:
        kind = getattr(spec.convert, "__name__", "value")
        shown = "***" if spec.secret else raw
        raise AzUsageError(
            f"{command.name}: error: argument {spec.label}: invalid {kind} value: '{shown}'"
        ) from None


def help_text(item: Parsed | GroupHelp) -> str:
    """The ``-h`` text: a group's commands, or a command's arguments."""
    if isinstance(item, GroupHelp):
        name = " ".join(("az", *item.path))
        lines = ["", "Group", f"    {name}", "", "Subgroups and commands:"]
        width = max((len(w) for w, _ in item.children), default=0)
        lines += [f"    {w:<{width}} : {s}" for w, s in item.children]
        lines += ["", "Run by azbai locally: see 'azbai az --help'.", ""]
        return "\n".join(lines)
    command = item.command
    lines = ["", "Command", f"    {command.name}: {command.summary}", "", "Arguments"]
    for spec in (*command.flags, *GLOBAL_FLAGS):
        label = " ".join(spec.names)
        tags = "[Required]" if spec.required else ""
        note = spec.help or ""
        if spec.ignored:
            note = (note + " " if note else "") + f"(accepted and ignored locally: {spec.ignored})"
        if spec.default not in (None, False) and spec.takes_value:
            note += f"  Default: {spec.default}."
        lines.append(f"    {label:<34} {tags:<10} {note}".rstrip())
    return "\n".join(lines) + "\n"
