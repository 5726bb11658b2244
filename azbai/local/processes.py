"""Stopping processes: SIGTERM, a grace period, SIGKILL — the one loop the local engine uses for it.

(The launcher has its own, for process groups: it must stay standard-library only.)
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable, Mapping

import psutil

_POLL = 0.05


def by_environment(match: Callable[[Mapping[str, str]], bool]) -> list[psutil.Process]:
    """The processes (but this one) whose environment ``match`` accepts; one gone, or not ours to read, is not."""
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            environ = process.environ()
        except (psutil.Error, OSError):
            continue
        if match(environ):
            found.append(process)
    return found


def running(process: psutil.Process) -> bool:
    """Whether ``process`` still runs (a zombie waiting to be collected does not)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop_processes(
    processes: Iterable[psutil.Process], grace: float, *, kill_grace: float = 5.0
) -> list[psutil.Process]:
    """SIGTERM every process, SIGKILL those still running after ``grace`` seconds, wait ``kill_grace`` more;
    returns the ones that are still running then. :class:`psutil.AccessDenied` when one may not be signalled."""
    live = [p for p in processes if running(p)]
    for signal_them, wait in ((psutil.Process.terminate, grace), (psutil.Process.kill, kill_grace)):
        for process in live:
            with contextlib.suppress(psutil.NoSuchProcess):
                signal_them(process)
        deadline = time.monotonic() + wait
        while live and time.monotonic() < deadline:
            time.sleep(_POLL)
            live = [p for p in live if running(p)]
        if not live:
            break
    return live
