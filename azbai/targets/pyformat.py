"""Generated Python reads as a person wrote it: every file is put through ``ruff format`` before it is written.

ruff is an install requirement of azbai (a single binary, no Python dependencies). Its configuration files are
ignored (``--isolated``), so the output does not depend on the folder a migration runs from.
"""

from __future__ import annotations

import subprocess

from azbai.errors import TargetError

LINE_LENGTH = 110


def format_python(source: str, *, name: str = "generated.py") -> str:
    """``source`` formatted by ruff; :class:`TargetError` when ruff is missing or the code does not parse."""
    try:
        from ruff.__main__ import find_ruff_bin
    except ImportError as exc:  # an installation without azbai's requirements
        raise TargetError(
            "ruff is not installed: pip install ruff (azbai formats the code it writes)"
        ) from exc
    try:
        done = subprocess.run(
            [
                find_ruff_bin(),
                "format",
                "--isolated",
                f"--line-length={LINE_LENGTH}",
                f"--stdin-filename={name}",
                "-",
            ],
            input=source,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise TargetError(f"cannot run ruff to format {name}: {exc}") from exc
    if done.returncode != 0:
        raise TargetError(f"azbai generated {name} that does not parse (a bug): {done.stderr.strip()}")
    return done.stdout
