"""Diagnostics: one problem in a config, named by its JSON path.

A :class:`Diagnostic` says where (``properties.mountVolumes.azureFileShares[0].relativeMountPath``), what was
found, and what was expected. Parsing collects all of them before it fails, so a user fixes a file in one pass.
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field


class Severity(enum.Enum):
    """How bad a problem is: an ``ERROR`` stops the migration, a ``WARNING`` is reported and the migration goes on."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One problem found in a config.

    ``path`` is a JSON path without the leading ``$`` (``properties.nodeCount``); ``""`` means the whole file.
    ``code`` is a stable short identifier tests and tools can match on (``unknown-key``, ``wrong-type`` …).
    """

    path: str
    code: str
    message: str
    severity: Severity = field(default=Severity.ERROR, compare=False)
    line: int | None = field(default=None, compare=False)
    column: int | None = field(default=None, compare=False)
    #: the file it was found in, once the façade has labelled it
    file: str | None = field(default=None, compare=False)

    @property
    def is_error(self) -> bool:
        """True when this diagnostic stops the migration."""
        return self.severity is Severity.ERROR

    def __str__(self) -> str:
        where = self.path or "(file)"
        if self.line is not None:
            where += f" (line {self.line}, column {self.column})"
        return f"{self.severity.value}: {where}: {self.message} [{self.code}]"

    def to_dict(self) -> dict[str, object]:
        """A JSON-friendly form (used by ``azbai validate --json``)."""
        out: dict[str, object] = {
            "severity": self.severity.value,
            "path": self.path,
            "code": self.code,
            "message": self.message,
        }
        if self.line is not None:
            out["line"] = self.line
            out["column"] = self.column
        if self.file is not None:
            out = {"file": self.file, **out}
        return out


def join_path(base: str, key: str | int) -> str:
    """Extend a JSON path by an object key or an array index."""
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f"{base}.{key}" if base else key


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a close candidate exists, else ``""``. Case differences count as close."""
    pool = sorted(set(candidates))
    lowered = {c.lower(): c for c in pool}
    normalised = word.lower().replace("_", "").replace("-", "")
    for low, original in lowered.items():
        if low.replace("_", "") == normalised:
            return f" (did you mean '{original}'?)"
    close = difflib.get_close_matches(word, pool, n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


_SAS_SIGNATURE_RE = re.compile(r"([?&]sig=)[^&\s'\"]+", re.IGNORECASE)


def has_sas_token(text: str) -> bool:
    """Whether ``text`` holds a SAS token (a URL query with ``sig=``)."""
    return _SAS_SIGNATURE_RE.search(text) is not None


def hide_sas_signatures(text: str) -> str:
    """``text`` with the signature (``sig=…``) of every SAS token in it replaced by ``(hidden)``."""
    return _SAS_SIGNATURE_RE.sub(r"\1(hidden)", text)


def describe_value(value: object, *, secret: bool = False) -> str:
    """A short, safe description of a JSON value for a message. Secret values are never quoted."""
    kind = json_type_name(value)
    if secret:
        return f"{kind} (value hidden)"
    if isinstance(value, str):
        value = hide_sas_signatures(value)
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f'string "{shown}"'
    if isinstance(value, bool) or value is None:
        return "true" if value is True else "false" if value is False else "null"
    if isinstance(value, int | float):
        return f"{kind} {value!r}"
    return kind


def json_type_name(value: object) -> str:
    """The JSON type name of a decoded value: object, array, string, integer, number, boolean or null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


class Collector:
    """Accumulates diagnostics while a file is parsed."""

    def __init__(self) -> None:
        self._items: list[Diagnostic] = []

    def error(self, path: str, code: str, message: str) -> None:
        """Record an error."""
        self._items.append(Diagnostic(path, code, message, Severity.ERROR))

    def warning(self, path: str, code: str, message: str) -> None:
        """Record a warning."""
        self._items.append(Diagnostic(path, code, message, Severity.WARNING))

    def add(self, diagnostic: Diagnostic) -> None:
        """Record a ready-made diagnostic."""
        self._items.append(diagnostic)

    @property
    def items(self) -> tuple[Diagnostic, ...]:
        """Everything recorded, in the order found."""
        return tuple(self._items)

    @property
    def has_errors(self) -> bool:
        """True when at least one error was recorded."""
        return any(d.is_error for d in self._items)
