"""azbai.fsutil: whole files or none, with the modes a user expects."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from azbai.fsutil import atomic_write, create_new


@pytest.fixture
def umask_027() -> Iterator[None]:
    previous = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_written_file_gets_the_mode_open_gives_under_the_current_umask(
    tmp_path: Path, umask_027: None
) -> None:
    path = atomic_write(tmp_path / "a/b.txt", "text")
    assert path.read_text() == "text" and mode(path) == 0o640
    assert [p.name for p in path.parent.iterdir()] == ["b.txt"]  # no temporary file left beside it


def test_a_given_mode_is_the_files_mode_whatever_the_umask(tmp_path: Path, umask_027: None) -> None:
    assert mode(atomic_write(tmp_path / "secret", b"k", mode=0o600)) == 0o600
    assert mode(atomic_write(tmp_path / "script", b"#!", mode=0o755)) == 0o755


def test_a_private_file_is_created_private(tmp_path: Path) -> None:
    # the temporary file of a mode-0o600 write is never readable by others, not even before its chmod
    fd, path = create_new(tmp_path, ".x.", ".tmp", 0o600)
    os.close(fd)
    assert mode(path) == 0o600 and path.name.startswith(".x.") and path.name.endswith(".tmp")


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        atomic_write(tmp_path / "x", 42)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
