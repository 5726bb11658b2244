"""Writing files so that a reader never sees half of one: every azbai file is written through here. And which files
of a step's source directory are its code (:func:`code_files`).

Standard library only, no azbai import: any layer may use it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


def create_new(folder: Path, prefix: str, suffix: str, mode: int = 0o666) -> tuple[int, Path]:
    """Create a new file ``folder/<prefix><8 random hex digits><suffix>``, open for writing; its descriptor and path.

    Its mode is ``mode`` less the umask (applied by the kernel): by default what ``open`` gives a new file, so that
    it can be renamed into place as the final file (``tempfile.mkstemp``'s 0o600 would outlive the rename).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        path = folder / f"{prefix}{os.urandom(4).hex()}{suffix}"
        try:
            return os.open(path, flags, mode), path
        except FileExistsError:
            continue


def atomic_write(path: str | os.PathLike[str], data: str | bytes, *, mode: int | None = None) -> Path:
    """Write ``data`` to ``path`` through a temporary file beside it and a rename (creating parent directories).

    The file gets ``mode``, or what ``open`` would give it (0o666 less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a file given a mode (a private one) never exists with a wider one, not even before the chmod
    handle, temporary = create_new(
        path.parent, f".{path.name}.", ".tmp", 0o666 if mode is None else mode & 0o666
    )
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


#: what a step's source directory holds that is not its code: bytecode caches (written by the step's own imports),
#: notebook checkpoints, azbai's and git's folders. An Azure ML snapshot leaves them out, and a local step's reuse
#: does not count them.
NOT_CODE = ("__pycache__", ".ipynb_checkpoints", ".azbai", ".git")


def code_files(source: str | os.PathLike[str]) -> Iterator[tuple[Path, str]]:
    """The files under ``source`` that are a step's code (all but :data:`NOT_CODE`, links to files included), sorted
    by relative path, as ``(path, relative POSIX path)``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = [d for d in dirnames if d not in NOT_CODE]
        for filename in filenames:
            path = Path(dirpath, filename)
            if path.is_file():
                found.append((path, path.relative_to(source).as_posix()))
    return iter(sorted(found, key=lambda item: item[1]))
