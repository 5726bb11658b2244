"""Progress bars for ``show_progress=True`` transfers, shown only at the user's edge.

In Jupyter a ``tqdm`` bar (``tqdm.auto``) when tqdm is installed, else a line of text rewritten in place; on a
terminal a text bar on stderr; anywhere else (a pipe, a log file, a test) nothing is drawn and the transfer is only
logged. The library never prints otherwise.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

#: ``progress(done_bytes, total_bytes, done_files, total_files)``, as :mod:`azbai.local.transfer` calls it
Progress = Callable[[int, int, int, int], None]

_WIDTH = 30
_MIN_INTERVAL = 0.1


def in_jupyter() -> bool:
    """Whether this process is a Jupyter kernel."""
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    get_ipython = getattr(shell, "get_ipython", None)
    return get_ipython is not None and get_ipython() is not None


@contextmanager
def progress_bar(description: str, show: bool) -> Iterator[Progress | None]:
    """A progress callback for a transfer, or ``None`` when nothing should be drawn."""
    if not show:
        yield None
        return
    if in_jupyter():
        try:
            from tqdm.auto import tqdm
        except ImportError:
            with _text_bar(description, sys.stdout) as callback:
                yield callback
            return
        with _tqdm_bar(tqdm, description) as callback:
            yield callback
        return
    stream = sys.stderr
    if not getattr(stream, "isatty", lambda: False)():
        yield None
        return
    with _text_bar(description, stream) as callback:
        yield callback


@contextmanager
def _tqdm_bar(tqdm: Any, description: str) -> Iterator[Progress]:
    bar = tqdm(total=0, unit="B", unit_scale=True, desc=description, leave=True)
    seen = {"bytes": 0}

    def update(done: int, total: int, files: int, total_files: int) -> None:
        if bar.total != total:
            bar.total = total
            bar.refresh()
        bar.update(done - seen["bytes"])
        seen["bytes"] = done
        bar.set_postfix_str(f"{files}/{total_files} files", refresh=False)

    try:
        yield update
    finally:
        bar.close()


@contextmanager
def _text_bar(description: str, stream: TextIO) -> Iterator[Progress]:
    last: dict[str, Any] = {"at": 0.0, "line": ""}

    def update(done: int, total: int, files: int, total_files: int) -> None:
        now = time.monotonic()
        if files != total_files and now - last["at"] < _MIN_INTERVAL:
            return
        last["at"] = now
        fraction = done / total if total else 1.0
        filled = int(fraction * _WIDTH)
        line = (
            f"\r{description} [{'#' * filled}{'.' * (_WIDTH - filled)}] {fraction:4.0%} "
            f"{files}/{total_files} files, {done / 1e6:.1f}/{total / 1e6:.1f} MB"
        )
        last["line"] = line
        stream.write(line)
        stream.flush()

    try:
        yield update
    finally:
        if last["line"]:
            stream.write("\n")
            stream.flush()
