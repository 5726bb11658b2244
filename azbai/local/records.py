"""State files with a format number: job records, pipeline runs, trigger memory, the emulator's state.

Each is a JSON object with ``"format": N``; one written by another azbai version, or not by azbai at all, is
refused with a message that says which file and what to do, never a traceback.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from azbai.errors import AzbaiError
from azbai.fsutil import atomic_write_json

T = TypeVar("T")


def save_record(path: Path, data: dict[str, Any], version: int) -> None:
    """Write ``data`` with its format number, atomically."""
    atomic_write_json(path, {"format": version, **data})


def load_record(
    path: Path,
    version: int,
    what: str,
    error: type[AzbaiError],
    build: Callable[[dict[str, Any]], T],
    *,
    hint: str = "",
) -> T:
    """Read a state file of format ``version`` and ``build`` its object; ``error`` when it is stale or foreign."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise error(f"cannot read the {what} {path}: {exc}") from exc
    found = data.get("format") if isinstance(data, dict) else None
    if found != version:
        raise error(
            f"{path} is not a {what} this azbai can read (format {found!r}, expected {version})"
            + (f"; {hint}" if hint else "")
        )
    data = {k: v for k, v in data.items() if k != "format"}
    try:
        return build(data)
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise error(f"{path} is a damaged {what} ({exc})" + (f"; {hint}" if hint else "")) from exc


def strict_fields(cls: type[Any], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` checked against the fields of the dataclass ``cls``: an unknown or missing key is a ValueError."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}")
    return data
