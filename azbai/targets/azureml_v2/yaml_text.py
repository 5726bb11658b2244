"""A small YAML emitter for the CLI v2 files: block mappings and lists, plain scalars where they are safe.

``azbai migrate`` writes YAML without PyYAML (the core install needs only click). The subset is deliberately
small: mappings with string keys, lists, strings, integers, booleans and None. A string is written plain only when
a YAML 1.1 or 1.2 reader reads it back as the same string; anything else is JSON-quoted, and a JSON string is a valid
YAML double-quoted scalar. Comments are whole lines, written where the caller puts them.

azure-ai-ml reads the files with PyYAML, so PyYAML's own implicit resolvers decide what a plain scalar is:
:data:`_PYYAML_IMPLICIT` is a copy of them (``yaml/resolver.py``, PyYAML 6.0; a test holds it equal to the installed
PyYAML's), so that ``azbai migrate`` writes the same files whether or not PyYAML is installed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

_PLAIN = re.compile(r"[A-Za-z0-9_./+$-][A-Za-z0-9_./@+:=$-]*")
_RESERVED = re.compile(
    r"(?i)(y|yes|n|no|true|false|on|off|null|~|[-+]?(\d[\d_]*)?(\.\d*)?([eE][-+]?\d+)?|0x[0-9a-f]+|0o[0-7]+"
    r"|[-+]?\.(inf|nan)|\d+(:\d+)+|\d{4}-\d\d-\d\d.*)"
)

#: PyYAML's implicit resolvers (tag, pattern, first characters): a plain scalar one of them matches is not a string
_PYYAML_IMPLICIT: tuple[tuple[str, re.Pattern[str], str], ...] = (
    (
        "tag:yaml.org,2002:bool",
        re.compile(
            r"""^(?:yes|Yes|YES|no|No|NO
                    |true|True|TRUE|false|False|FALSE
                    |on|On|ON|off|Off|OFF)$""",
            re.X,
        ),
        "yYnNtTfFoO",
    ),
    (
        "tag:yaml.org,2002:float",
        re.compile(
            r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
                    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
                    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""",
            re.X,
        ),
        "-+0123456789.",
    ),
    (
        "tag:yaml.org,2002:int",
        re.compile(
            r"""^(?:[-+]?0b[0-1_]+
                    |[-+]?0[0-7_]+
                    |[-+]?(?:0|[1-9][0-9_]*)
                    |[-+]?0x[0-9a-fA-F_]+
                    |[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$""",
            re.X,
        ),
        "-+0123456789",
    ),
    ("tag:yaml.org,2002:merge", re.compile(r"^(?:<<)$"), "<"),
    (
        "tag:yaml.org,2002:null",
        re.compile(
            r"""^(?: ~
                    |null|Null|NULL
                    | )$""",
            re.X,
        ),
        "~nN",
    ),
    (
        "tag:yaml.org,2002:timestamp",
        re.compile(
            r"""^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]
                    |[0-9][0-9][0-9][0-9] -[0-9][0-9]? -[0-9][0-9]?
                     (?:[Tt]|[ \t]+)[0-9][0-9]?
                     :[0-9][0-9] :[0-9][0-9] (?:\.[0-9]*)?
                     (?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$""",
            re.X,
        ),
        "0123456789",
    ),
    ("tag:yaml.org,2002:value", re.compile(r"^(?:=)$"), "="),
    ("tag:yaml.org,2002:yaml", re.compile(r"^(?:!|&|\*)$"), "!&*"),
)

#: characters YAML does not allow raw, or reads as line breaks (NEL, LS, PS): escaped in a double-quoted scalar
_UNPRINTABLE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff\ud800-\udfff]")


STR_TAG = "tag:yaml.org,2002:str"


class Comment(str):
    """A mapping key that is written as a ``# comment`` line (its value is ignored)."""


class Folded(str):
    """A long string written as a folded block (``>-``), one of ``lines`` per line; it reads back joined by spaces."""

    lines: tuple[str, ...]

    def __new__(cls, lines: Sequence[str]) -> Folded:
        text = super().__new__(cls, " ".join(lines))
        text.lines = tuple(lines)
        return text

    def foldable(self) -> bool:
        """Whether folding gives back exactly the string (no line with outer blanks, tabs or newlines)."""
        return all(
            line and line == line.strip() and not re.search(r"[\t\n\r]|  ", line) for line in self.lines
        )


def scalar(value: Any) -> str:
    """One scalar as YAML text."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"cannot write {type(value).__name__} as YAML")
    if (
        _PLAIN.fullmatch(value)
        and not _RESERVED.fullmatch(value)
        and not value.endswith(":")
        and pyyaml_tag(value) == STR_TAG
    ):
        return value
    return _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", json.dumps(value, ensure_ascii=False))


def pyyaml_tag(value: str) -> str:
    """The tag PyYAML's resolver gives ``value`` as a plain scalar (``Resolver().resolve(ScalarNode, value, (True,
    False))``): :data:`STR_TAG` unless an implicit resolver for its first character matches it."""
    for tag, pattern, first in _PYYAML_IMPLICIT:
        if value[:1] in first and pattern.match(value):
            return tag
    return STR_TAG


def dump(document: Mapping[str, Any], header: Sequence[str] = ()) -> str:
    """A mapping as a YAML document, after ``header`` comment lines."""
    lines = [f"# {line}".rstrip() for line in header]
    _mapping(document, 0, lines)
    return "\n".join(lines) + "\n"


def _mapping(mapping: Mapping[str, Any], indent: int, lines: list[str]) -> None:
    pad = " " * indent
    for key, value in mapping.items():
        if isinstance(key, Comment):
            lines.append(f"{pad}# {key}".rstrip())
            continue
        name = scalar(key)
        if isinstance(value, Mapping) and value:
            lines.append(f"{pad}{name}:")
            _mapping(value, indent + 2, lines)
        elif isinstance(value, list | tuple) and value:
            lines.append(f"{pad}{name}:")
            _sequence(value, indent + 2, lines)
        elif isinstance(value, Folded) and value.foldable():
            lines.append(f"{pad}{name}: >-")
            lines += [f"{pad}  {line}" for line in value.lines]
        elif isinstance(value, Mapping):
            lines.append(f"{pad}{name}: {{}}")
        elif isinstance(value, list | tuple):
            lines.append(f"{pad}{name}: []")
        else:
            lines.append(f"{pad}{name}: {scalar(value)}")


def _sequence(items: Sequence[Any], indent: int, lines: list[str]) -> None:
    pad = " " * indent
    for item in items:
        if isinstance(item, Mapping) and item:
            start = len(lines)
            _mapping(item, indent + 2, lines)
            lines[start] = f"{pad}- {lines[start][indent + 2 :]}"
        elif isinstance(item, list | tuple) and item:
            raise TypeError("nested lists are not needed by any CLI v2 file azbai writes")
        else:
            lines.append(f"{pad}- {scalar(item)}")
