"""Writing files so that a reader never sees half of one: every azbai file is written through here.

Standard library only, no azbai import: any layer may use it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike[str], data: str | bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` through a temporary file beside it and a rename (creating parent directories)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data.encode("utf-8") if isinstance(data, str) else data)
        if mode is not None:
            os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """:func:`atomic_write` of indented JSON ending in a newline."""
    return atomic_write(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_tree(root: str | os.PathLike[str], files: Mapping[str, str | bytes]) -> tuple[Path, ...]:
    """Write ``files`` (relative path → text or bytes) under ``root``, each atomically; returns the paths."""
    return tuple(atomic_write(Path(root) / relative, content) for relative, content in files.items())
