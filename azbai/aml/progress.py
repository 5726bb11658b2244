"""Progress bars for ``show_progress=True`` transfers, shown only at the user's edge.

In Jupyter a ``tqdm`` bar (its widget with ipywidgets, else its text) when tqdm is installed, else a line of text
rewritten in place; on a terminal a text bar on stderr; anywhere else (a pipe, a log file, a test) nothing is drawn
and the transfer is only logged. The library never prints otherwise.
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
        tqdm = _jupyter_tqdm()
        if tqdm is None:
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


def _jupyter_tqdm() -> Any:
    """tqdm's widget bar when ipywidgets is there, else its text bar (on stdout); None without tqdm."""
    try:
        import ipywidgets  # noqa: F401
        from tqdm.notebook import tqdm
    except ImportError:
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        return lambda **options: tqdm(file=sys.stdout, **options)
    return tqdm


@contextmanager
def _tqdm_bar(tqdm: Any, description: str) -> Iterator[Progress]:
    state: dict[str, Any] = {"bar": None, "bytes": 0}

    def update(done: int, total: int, files: int, total_files: int) -> None:
        bar = state["bar"]
        if bar is None:  # made at the first call, when the total is known
            bar = state["bar"] = tqdm(total=total, unit="B", unit_scale=True, desc=description, leave=True)
        bar.update(done - state["bytes"])
        state["bytes"] = done
        bar.set_postfix_str(f"{files}/{total_files} files", refresh=False)

    try:
        yield update
    finally:
        if state["bar"] is not None:
            state["bar"].close()


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
