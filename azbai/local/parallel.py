"""Run an Azure ML ``ParallelRunStep`` entry script locally, unchanged, over every file of a folder.

This module is standalone on purpose: standard library only, Python >= 3.8 on POSIX, no ``azbai`` import, so
it can run in any Python process (the launcher starts it once per rank)::

    python -m azbai.local.parallel --entry-script PATH --input DIR --output DIR --state DIR
        [--mini-batch-size N] [--error-threshold N] [--max-retries N] [--timeout SECONDS] [--workers K]
        [-- ENTRY ARGS...]

The entry script is what Azure ML runs: ``init()`` (optional here) is called once per worker process and
``run(mini_batch)`` with a list of absolute file paths, returning one result per item (a list, a tuple, or a
pandas ``DataFrame``: anything but a string with ``len()``). It runs with ``sys.argv = [script, *ENTRY ARGS]``,
the working directory unchanged, its own directory first on ``sys.path`` and ``$AZUREML_BI_OUTPUT_PATH`` set to
``--output``. Each process supervises ``--workers`` worker processes; it imports nothing of the entry script. On
Linux the workers fork from a fork server, a process of its own that imported the entry script once (its
module-level code runs there, once), so that a worker pays only for its ``init()``; where that cannot be, or the
entry script fails to import there, each worker is a fresh interpreter (:class:`_ForkServer`;
``AZBAI_PARALLEL_FORK=0`` turns it off). A fork server started ahead of the step (:func:`prestart`, named by
``$AZBAI_PARALLEL_WARM``) is adopted when it fits, so that its imports have overlapped the steps before.

Any number of such processes may share one ``--state`` directory; they are symmetric and coordinate through it
alone, with atomic file operations (``O_CREAT|O_EXCL``, hard links and ``os.replace`` of temporary files)::

    <state>/tasks.json                 the work list: the input's files, recursively, sorted by relative
                                       path, cut into mini-batches in that order; every process lists the
                                       input, the first links its list into place, the others (and reruns)
                                       must find the same files
    <state>/claims/<batch>.<attempt>   who runs it (worker pid, host, boot id, supervisor pid, start time)
    <state>/done/<batch>.json          after run() succeeded: the attempt, items, results, worker
    <state>/failed/<batch>.<attempt>.json  why the attempt failed (exception, wrong length, crash, timeout)
    <state>/procs/<host>.<pid>         a supervisor's heartbeat (liveness of claims made on another host)
    <state>/summary.json               counts; every process rewrites it when it exits, the last one wins

A worker claims (``O_EXCL`` on ``<batch>.0``) the next never-claimed mini-batch, in order; when none is left, the
first mini-batch with no done marker, not given up, whose latest claim has failed or is stale (its process is gone:
``os.kill(pid, 0)`` on the same host and boot, else a heartbeat older than :data:`HEARTBEAT_STALE_SECONDS`), as its
next attempt; else it waits for the others (its supervisor wakes it as soon as one of its own workers ends a
mini-batch or exits; what other supervisors' workers do it sees by looking again). run() raising, returning the
wrong number of results, exceeding ``--timeout`` (the supervisor kills the worker) or the worker dying (the
supervisor notices) is a failed attempt; after ``1 + --max-retries`` failed attempts the mini-batch is given up and
its items count as failed. A claim left by a worker killed together with its supervisor is not a failed attempt:
the mini-batch is simply run again. Every item ends in exactly one done marker: a late duplicate is discarded. A
rerun on the same state runs only what has no done marker; failed attempts recorded in an earlier run's
``summary.json`` are forgotten, so given-up mini-batches get a fresh set of attempts.

Exit status: 0 when every mini-batch is done, or the items of those given up are within ``--error-threshold``
(-1: any number); otherwise non-zero with a one-line reason on stderr:

=====  =======================================================================================================
1      more failed items than ``--error-threshold``: names the first mini-batch given up and its last error
       (workers stop taking mini-batches as soon as the threshold is exceeded, as Azure ML aborts the job)
2      bad arguments, a missing entry script or input folder, a state made for another input or size, or an
       unusable state folder (an OS error)
3      the entry script cannot run: import error, no ``run()``, ``init()`` failing, or workers dying outside a
       mini-batch more than ``max(1, max_retries) * workers`` times
130    SIGINT (143: SIGTERM): the workers are terminated; their mini-batches run again on a rerun
=====  =======================================================================================================
"""

from __future__ import annotations

import argparse
import ast
import atexit
import contextlib
import importlib
import importlib.util
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ENTRY = 3

#: a heartbeat older than this marks another host's claims stale
HEARTBEAT_STALE_SECONDS = 120.0
#: an empty claim file (its writer died between create and write) older than this is stale
EMPTY_CLAIM_STALE_SECONDS = 10.0
OUTPUT_ENV = "AZUREML_BI_OUTPUT_PATH"

# worker exit codes, seen only by the supervisor
_W_LOAD = 3
_W_INIT = 4
_W_ABORT = 5
_W_ORPHAN = 6
_HEARTBEAT_EVERY = 5.0
_PROGRESS_EVERY = 0.5
_POLL = 0.05
_GRACE = 5.0
_HOST = socket.gethostname()
# Loads this file under a private name in a fresh interpreter: works as azbai.local.parallel or as a copied
# file, and keeps this module's folder off sys.path (its siblings must not shadow the entry script's imports).
_BOOT = (
    "import importlib.util as u,sys;s=u.spec_from_file_location('_azbai_parallel_worker',sys.argv[1]);"
    "m=u.module_from_spec(s);sys.modules[s.name]=m;s.loader.exec_module(m);"
    "sys.exit(m._worker_main(sys.argv[2:]))"
)
_FORK_BOOT = _BOOT.replace("_worker_main", "_fork_server_main")
_WARM_BOOT = _BOOT.replace("_worker_main", "_warm_server_main")
_ZYGOTE_BOOT = _BOOT.replace("_worker_main", "_zygote_main")
#: ``0`` turns the fork server off: every worker is a fresh interpreter
FORK_ENV = "AZBAI_PARALLEL_FORK"
#: in a step's environment: the (abstract) socket of a fork server started ahead of the step (:func:`prestart`)
WARM_ENV = "AZBAI_PARALLEL_WARM"
#: ``0`` starts no fork server ahead of a step (the step starts its own)
PRESTART_ENV = "AZBAI_PARALLEL_PRESTART"
#: ``0``: a :class:`WarmPool` starts every fork server afresh, as :func:`prestart` does
POOL_ENV = "AZBAI_PARALLEL_POOL"
#: what may differ between a fork server started ahead of a step and the step's own environment: the job's
#: Batch AI and Azure ML variables (paths, ranks), azbai's own, and what a shell sets. Anything else that differs
#: could have changed what an import did, and the step starts a fork server of its own.
_PER_JOB_ENV = re.compile(r"(AZ_BATCHAI_|AZUREML_|AZBAI_).*|PWD|OLDPWD|SHLVL|_")
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


class ParallelError(Exception):
    """The run cannot start as asked; ``code`` is the exit status, the message says what to fix."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


# --- entry points -------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: parse, :func:`drive`, return its status. ``--`` starts the entry script's arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    entry_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, entry_args = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(
        prog="python -m azbai.local.parallel",
        description="Run a ParallelRunStep entry script's init()/run(mini_batch) over every file of a folder.",
        epilog="Arguments after '--' are the entry script's own (its sys.argv[1:]).",
    )
    parser.add_argument(
        "--entry-script", required=True, help="the script defining init() and run(mini_batch)"
    )
    parser.add_argument("--input", required=True, help="folder whose files (recursively) are the items")
    parser.add_argument("--output", required=True, help="the entry script's $AZUREML_BI_OUTPUT_PATH")
    parser.add_argument("--state", required=True, help="progress folder shared by every process of the run")
    parser.add_argument("--mini-batch-size", type=int, default=1, help="files per run() call (default 1)")
    parser.add_argument(
        "--error-threshold", type=int, default=0, help="failed items tolerated, -1: any (default 0)"
    )
    parser.add_argument(
        "--max-retries", type=int, default=3, help="retries of a failed mini-batch (default 3)"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds one run() call may take (default 600)"
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes of this process (default 1)")
    args = parser.parse_args(argv)
    return drive(
        args.entry_script,
        args.input,
        args.output,
        args.state,
        arguments=entry_args,
        mini_batch_size=args.mini_batch_size,
        error_threshold=args.error_threshold,
        max_retries=args.max_retries,
        timeout=args.timeout,
        workers=args.workers,
    )


def drive(
    entry_script: str | os.PathLike[str],
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    state_dir: str | os.PathLike[str],
    *,
    arguments: Sequence[str] = (),
    mini_batch_size: int = 1,
    error_threshold: int = 0,
    max_retries: int = 3,
    timeout: float = 600.0,
    workers: int = 1,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Take part in the run on ``state_dir`` with ``workers`` worker processes until nothing is left to do.

    Progress lines go to ``stdout``; a failure's one-line reason to ``stderr``. Returns the exit status (module
    docstring). Call it from as many processes as you like, on one host or several sharing the folder.
    """
    out = sys.stdout if stdout is None else stdout
    err = sys.stderr if stderr is None else stderr
    try:
        settings = _settings(
            entry_script,
            input_dir,
            output_dir,
            state_dir,
            arguments,
            mini_batch_size,
            error_threshold,
            max_retries,
            timeout,
            workers,
        )
        code, reason = _Supervisor(settings, out).run()
    except ParallelError as exc:
        code, reason = exc.code, str(exc)
    except OSError as exc:
        code, reason = EXIT_USAGE, f"{type(exc).__name__}: {exc}"
    if code != EXIT_OK:
        print(f"parallel: error: {reason}", file=err, flush=True)
    return code


# --- shared state -------------------------------------------------------------------------------------------


def _settings(
    entry_script: str | os.PathLike[str],
    input_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    state_dir: str | os.PathLike[str],
    arguments: Sequence[str],
    mini_batch_size: int,
    error_threshold: int,
    max_retries: int,
    timeout: float,
    workers: int,
) -> dict[str, Any]:
    problems = []
    if mini_batch_size < 1:
        problems.append(f"--mini-batch-size must be at least 1, not {mini_batch_size}")
    if error_threshold < -1:
        problems.append(f"--error-threshold must be -1 (any) or more, not {error_threshold}")
    if max_retries < 0:
        problems.append(f"--max-retries must be 0 or more, not {max_retries}")
    if not timeout > 0:
        problems.append(f"--timeout must be positive, not {timeout}")
    if workers < 1:
        problems.append(f"--workers must be at least 1, not {workers}")
    entry = os.path.abspath(os.fspath(entry_script))
    if not os.path.isfile(entry):
        problems.append(f"entry script not found: {entry}")
    source = os.path.abspath(os.fspath(input_dir))
    if not os.path.isdir(source):
        problems.append(f"input folder not found: {source}")
    if problems:
        raise ParallelError("; ".join(problems))
    output = os.path.abspath(os.fspath(output_dir))
    state = os.path.abspath(os.fspath(state_dir))
    for folder in (
        output,
        state,
        *(os.path.join(state, sub) for sub in ("claims", "done", "failed", "procs")),
    ):
        os.makedirs(folder, exist_ok=True)
    return {
        "entry": entry,
        "input": source,
        "output": output,
        "state": state,
        "arguments": [str(a) for a in arguments],
        "mini_batch_size": mini_batch_size,
        "error_threshold": error_threshold,
        "max_tries": max_retries + 1,
        "timeout": float(timeout),
        "workers": workers,
    }


def _bid(batch: int) -> str:
    return f"{batch:06d}"


def _write_json(path: str, data: Any, exclusive: bool = False) -> bool:
    """Publish ``data`` at ``path`` whole; ``exclusive``: only if nothing is there yet (else return False)."""
    folder, name = os.path.split(path)
    tmp = os.path.join(folder, f".{name}.{_HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, default=str)
    try:
        if not exclusive:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:
            # no hard links on this file system: create-exclusive, then write (readers retry a partial file)
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, default=str)
            return True
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_json(path: str, wait: float = 0.0) -> Any:
    """The JSON at ``path``; None if missing. A file that stays unparseable for ``wait`` seconds raises."""
    deadline = time.monotonic() + wait
    while True:
        try:
            with open(path, encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return None
        except ValueError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(_POLL)


def _list_input(source: str, skip: Sequence[str]) -> list[str]:
    """Every file under ``source`` (following links, once each), as sorted '/'-separated relative paths."""
    skip_real = {os.path.realpath(p) for p in skip}
    seen: set[tuple[int, int]] = set()
    items = []
    for top, dirs, files in os.walk(source, followlinks=True):
        st = os.stat(top)
        if (st.st_dev, st.st_ino) in seen or os.path.realpath(top) in skip_real:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        rel = os.path.relpath(top, source)
        for name in files:
            if os.path.isfile(os.path.join(top, name)):
                items.append(name if rel == "." else os.path.join(rel, name).replace(os.sep, "/"))
    return sorted(items)


class _Tasks:
    """The work list: items cut into mini-batches by order."""

    def __init__(self, items: list[str], size: int) -> None:
        self.items = items
        self.size = size
        self.count = (len(items) + size - 1) // size

    def batch(self, index: int) -> list[str]:
        return self.items[index * self.size : (index + 1) * self.size]

    @classmethod
    def load(cls, state: str) -> _Tasks:
        data = _read_json(os.path.join(state, "tasks.json"), wait=10.0)
        return cls(data["items"], data["mini_batch_size"])

    @classmethod
    def ensure(cls, settings: dict[str, Any]) -> _Tasks:
        """Write tasks.json unless another process did; check that an existing one lists the same files."""
        size = settings["mini_batch_size"]
        items = _list_input(settings["input"], (settings["output"], settings["state"]))
        path = os.path.join(settings["state"], "tasks.json")
        data = {"format": 1, "mini_batch_size": size, "batches": cls(items, size).count, "items": items}
        if not os.path.exists(path):
            _write_json(path, data, exclusive=True)
        try:
            found = _read_json(path, wait=10.0)
        except ValueError as exc:
            raise ParallelError(f"{path} is not valid JSON ({exc}); use a new --state folder") from exc
        if found.get("mini_batch_size") != size:
            raise ParallelError(
                f"{settings['state']} was made with --mini-batch-size {found.get('mini_batch_size')}, "
                f"not {size}; use a new --state folder"
            )
        if found.get("items") != items:
            old = set(found.get("items") or ())
            added, removed = sorted(set(items) - old), sorted(old - set(items))
            example = (added or removed or ["(order)"])[0]
            raise ParallelError(
                f"the input's files changed since {path} was made ({len(added)} added, {len(removed)} "
                f"removed, e.g. {example}); use a new --state folder"
            )
        return cls(items, size)


class _View:
    """One look at the state folder: what is done, failed and claimed."""

    def __init__(self, state: str, tasks: _Tasks, forgiven: frozenset[str], max_tries: int) -> None:
        self.state = state
        self.tasks = tasks
        self.forgiven = forgiven
        self.max_tries = max_tries
        done_names = _names(os.path.join(state, "done"))
        self._failed_files = set(_names(os.path.join(state, "failed")))
        claim_names = _names(os.path.join(state, "claims"))
        self.signature = (frozenset(done_names), frozenset(self._failed_files), frozenset(claim_names))
        self.done = {int(n[:-5]) for n in done_names if n.endswith(".json") and n[:-5].isdigit()}
        self.failed = _parse_failed(self._failed_files, forgiven)
        self.failed_total = sum(len(a) for a in _parse_failed(self._failed_files, frozenset()).values())
        self.latest: dict[int, int] = {}
        self.retries = 0
        for name in claim_names:
            parts = name.split(".")
            if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                batch, attempt = int(parts[0]), int(parts[1])
                self.latest[batch] = max(attempt, self.latest.get(batch, -1))
                self.retries += attempt > 0
        self.given_up = {
            b for b, attempts in self.failed.items() if b not in self.done and len(attempts) >= max_tries
        }

    @property
    def settled(self) -> bool:
        return len(self.done) + len(self.given_up) >= self.tasks.count

    def failed_items(self) -> int:
        return sum(len(self.tasks.batch(b)) for b in self.given_up)

    def candidates(self) -> Iterator[tuple[int, int]]:
        """(batch, attempt) pairs a worker may claim now, in batch order."""
        for batch in range(self.tasks.count):
            if batch in self.done or batch in self.given_up:
                continue
            latest = self.latest.get(batch)
            if latest is None:
                yield batch, 0
            elif self._over(batch, latest) and len(self._failures_now(batch, latest)) < self.max_tries:
                yield batch, latest + 1

    def _over(self, batch: int, attempt: int) -> bool:
        return f"{_bid(batch)}.{attempt}.json" in self._failed_files or not _claim_live(
            self.state, batch, attempt
        )

    def _failures_now(self, batch: int, latest: int) -> list[int]:
        """The failed attempts of ``batch`` as the failed folder has them now. An attempt's holder may have recorded
        its failure and exited after this view listed the folder (a dead holder then looks like a crash): counted
        from the listing, a mini-batch given up meanwhile would get one attempt too many."""
        return [
            attempt
            for attempt in range(latest + 1)
            if f"{_bid(batch)}.{attempt}" not in self.forgiven
            and os.path.exists(os.path.join(self.state, "failed", f"{_bid(batch)}.{attempt}.json"))
        ]


def _parse_failed(names: Iterable[str], forgiven: frozenset[str]) -> dict[int, list[int]]:
    """The failed attempts of each mini-batch, from failure marker names, leaving out the forgiven ones."""
    failed: dict[int, list[int]] = {}
    for name in names:
        parts = name.split(".")
        well_formed = len(parts) == 3 and parts[2] == "json" and parts[0].isdigit() and parts[1].isdigit()
        if well_formed and f"{parts[0]}.{parts[1]}" not in forgiven:
            failed.setdefault(int(parts[0]), []).append(int(parts[1]))
    return failed


def _is_done(state: str, batch: int) -> bool:
    return os.path.exists(os.path.join(state, "done", f"{_bid(batch)}.json"))


def _names(folder: str) -> list[str]:
    try:
        return [n for n in os.listdir(folder) if not n.startswith(".")]
    except FileNotFoundError:
        return []


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return ""


_BOOT_ID = _boot_id()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (died, not yet reaped) is dead for us
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _claim_live(state: str, batch: int, attempt: int) -> bool:
    path = os.path.join(state, "claims", f"{_bid(batch)}.{attempt}")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return False
    try:
        claim = json.loads(text)
    except ValueError:
        return age < EMPTY_CLAIM_STALE_SECONDS
    if claim.get("host") == _HOST:
        return claim.get("boot") == _BOOT_ID and _pid_alive(int(claim["pid"]))
    beat = os.path.join(state, "procs", f"{claim.get('host')}.{claim.get('supervisor')}")
    try:
        return time.time() - os.stat(beat).st_mtime < HEARTBEAT_STALE_SECONDS
    except FileNotFoundError:
        return False


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _record_failure(
    state: str, batch: int, attempt: int, items: list[str], kind: str, error: str, detail: str = ""
) -> bool:
    """Write the failure marker of an attempt unless it failed already or succeeded (the worker died after)."""
    done = _read_json(os.path.join(state, "done", f"{_bid(batch)}.json"), wait=2.0)
    if done is not None and done.get("attempt") == attempt:
        return False
    data = {
        "batch": _bid(batch),
        "attempt": attempt,
        "items": items,
        "kind": kind,
        "error": error,
        "detail": detail,
        "host": _HOST,
        "time": time.time(),
    }
    return _write_json(os.path.join(state, "failed", f"{_bid(batch)}.{attempt}.json"), data, exclusive=True)


# --- the supervisor -----------------------------------------------------------------------------------------


class _Forked:
    """A worker forked by the fork server, with what the supervisor uses of a ``Popen``.

    It is the fork server's child, not ours: its exit status comes through the fork server, and signals go
    through it too, because only its parent knows for sure that the pid is still this worker's (a reaped pid may
    be given to another process at once).
    """

    def __init__(self, server: _ForkServer, pid: int) -> None:
        self.server = server
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.server.pump()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0.0)
            self.server.pump(_POLL)
        return code

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            self.server.send({"signal": int(signum), "pid": self.pid})

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class _Adopted:
    """A fork server started ahead of the step (not this process's child), with what ``_ForkServer`` uses of a
    ``Popen``: its pid, waiting for it to exit, and killing it, through a pidfd (no pid reuse can mislead them)."""

    def __init__(self, pid: int, fd: int | None = None) -> None:
        self.pid = pid
        self._fd: int | None = os.pidfd_open(pid) if fd is None else fd  # type: ignore[attr-defined,unused-ignore]

    def poll(self) -> int | None:
        """0 once it has exited (its status is its parent's to collect), else None."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.wait(0)
        return None

    def wait(self, timeout: float | None = None) -> int:
        if self._fd is not None:
            readable, _, _ = select.select([self._fd], [], [], timeout)
            if not readable:
                assert timeout is not None
                raise subprocess.TimeoutExpired("the fork server", timeout)
            os.close(self._fd)
            self._fd = None
        return 0  # its exit status is its parent's (the pipeline engine's, or a zygote's) to collect

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        if self._fd is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._fd, signum)  # type: ignore[attr-defined,unused-ignore]


class _ForkServer:
    """A process that imported the entry script once and forks the workers from there (Linux only).

    A fresh worker pays for Python, the entry script's imports (torch: seconds) and then ``init()``; a forked one
    only for ``init()``, which still runs in each worker, as Azure ML calls it once per worker process. The fork
    server is a fresh interpreter of its own, started before any worker: the supervisor itself may be a process
    with threads (``drive()`` called from a program), and forking one of those can leave a child waiting forever
    on a lock some other thread held. The fork server only imports, so no library has started its compute
    threads when it forks (OpenMP's pool starts at the first parallel region, torch's intra-op pool likewise);
    each worker sets its own thread counts in ``init()``.

    Where the fork server cannot run (no ``fork``, ``AZBAI_PARALLEL_FORK=0``) or the entry script fails to
    import in it, workers are started afresh as before (a failing import is then reported by the worker, as
    without a fork server). Module-level code of the entry script runs once, in the fork server, not once per
    worker; a worker gets a fresh pid (its claims, signals and timeouts are its own), the supervisor's stdout and
    stderr, and a reseeded ``random``.
    """

    def __init__(self, config: dict[str, Any], env: dict[str, str]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock = ours
        self.exits: dict[int, int] = {}
        self.workers: dict[int, _Forked] = {}
        self.ready = False
        self.reason = ""
        self.forked: int | None = None
        try:
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    _FORK_BOOT,
                    os.path.abspath(__file__),
                    json.dumps(dict(config, control_fd=theirs.fileno())),
                ],
                env=env,
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()

    @classmethod
    def adopt(cls, address: str, config: dict[str, Any], env: dict[str, str]) -> _ForkServer:
        """The fork server started ahead of the step at ``address`` (:func:`prestart`), sent this supervisor's
        config, environment, working directory and standard streams; OSError when it is not there."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            sock.connect(b"\0" + address.encode())
            # the listening process's pid: the fork server's (it binds and listens itself)
            pid, _uid, _gid = _PEERCRED.unpack(
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            )
            if pid in (os.getpid(), os.getppid()):
                raise OSError(f"the socket is held by process {pid}, not a fork server")
            _flush_standard_streams()
            request = {"config": config, "env": env, "cwd": os.getcwd()}
            socket.send_fds(sock, [json.dumps(request).encode()], [0, 1, 2])
            proc = _Adopted(pid)
        except BaseException:
            sock.close()
            raise
        server = cls.__new__(cls)
        server.sock = sock
        server.exits, server.workers = {}, {}
        server.ready, server.reason, server.forked = False, "", None
        server.proc = proc  # type: ignore[assignment]
        return server

    @staticmethod
    def usable() -> bool:
        return (
            sys.platform.startswith("linux")
            and hasattr(os, "fork")
            and hasattr(socket, "send_fds")
            and os.environ.get(FORK_ENV, "1") != "0"
        )

    def wait_ready(self, stopped: Any) -> bool:
        """Wait until the entry script is imported; False (and ``reason``) when the fork server cannot serve."""
        while not self.ready and self.proc is not None:
            if stopped():
                self.close()
                return False
            self.pump(_POLL)
        return self.ready

    def fork(self, report_fd: int, wake_fd: int) -> _Forked | None:
        """A new worker reporting to ``report_fd``, woken by ``wake_fd``; None when the fork server is gone."""
        if self.proc is None:
            return None
        try:
            self.forked = None
            socket.send_fds(self.sock, [json.dumps({"fork": True}).encode()], [report_fd, wake_fd])
            while self.forked is None and self.proc is not None:
                self.pump(_POLL)
        except OSError as exc:
            self._gone(f"the fork server is unreachable ({exc})")
        if self.proc is None or self.forked is None:
            return None
        worker = self.workers[self.forked] = _Forked(self, self.forked)
        if self.forked in self.exits:
            worker.returncode = self.exits.pop(self.forked)
        return worker

    def send(self, message: dict[str, Any]) -> None:
        try:
            self.sock.send(json.dumps(message).encode())
        except OSError:
            self.pump()

    def pump(self, timeout: float = 0.0) -> None:
        """Take what the fork server said: ready or failed, a fork's pid, workers' exit statuses."""
        if self.proc is None:
            return
        readable, _, _ = select.select([self.sock], [], [], timeout)
        while readable:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                data = None
            except OSError:
                data = b""
            if not data:
                if data is not None:
                    self._gone("the fork server exited")
                return
            message = json.loads(data)
            if "ready" in message:
                self.ready = True
            elif "failed" in message:
                self.reason = message["failed"]
            elif "forked" in message:
                self.forked = message["forked"]
            elif "exit" in message:
                pid, code = message["exit"], message["code"]
                if pid in self.workers:
                    self.workers.pop(pid).returncode = code
                else:
                    self.exits[pid] = code
            readable, _, _ = select.select([self.sock], [], [], 0)

    def _gone(self, reason: str) -> None:
        """The fork server exited: its workers exit too (they watch their parent); mark them as they go."""
        self.reason = self.reason or reason
        self.sock.close()
        if self.proc is not None:
            self.proc.wait()
        self.proc = None
        deadline = time.monotonic() + _GRACE
        for worker in self.workers.values():
            while _pid_alive(worker.pid) and time.monotonic() < deadline:
                time.sleep(_POLL)
            worker.returncode = _W_ORPHAN
        self.workers.clear()

    def close(self) -> None:
        """End the fork server (its workers are gone or going); it exits when its socket closes."""
        if self.proc is None:
            return
        self.sock.close()
        _wait_or_kill(self.proc, _GRACE)
        self.proc = None


def _wait_or_kill(proc: subprocess.Popen[bytes] | _Forked | _Adopted, grace: float) -> None:
    """Wait up to ``grace`` seconds for ``proc`` to exit, then kill it and wait for that."""
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class _Child:
    """A worker process and what it reported: the (batch, attempt, started) it is running.

    ``fd`` is its report pipe until the supervisor has its exit status; ``ended`` once that pipe is at its end
    (the worker is exiting); ``wake`` the pipe through which the supervisor tells a waiting worker that a
    mini-batch ended; ``exit_fd`` a pidfd of a fresh worker, readable once it has exited (a forked worker's exit
    comes on the fork server's socket).
    """

    def __init__(self, proc: subprocess.Popen[bytes] | _Forked, fd: int, wake: int) -> None:
        self.proc = proc
        self.fd: int | None = fd
        self.ended = False
        self.wake: int | None = wake
        self.exit_fd = _pidfd(proc.pid) if isinstance(proc, subprocess.Popen) else None
        self.buffer = b""
        self.current: tuple[int, int, float] | None = None
        self.reason = ""
        self.timed_out = False

    def close(self) -> None:
        """Close the report pipe, the wake pipe and the pidfd: the supervisor has the worker's exit status."""
        for name in ("fd", "wake", "exit_fd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)


class _Supervisor:
    def __init__(self, settings: dict[str, Any], out: IO[str]) -> None:
        self.s = settings
        self.out = out
        self.state = settings["state"]
        self.started = time.time()
        self.children: list[_Child] = []
        self.restarts = max(1, settings["max_tries"] - 1) * settings["workers"]
        self.budget = self.restarts
        self.fatal: tuple[int, str] | None = None
        self.aborted = False
        self.stop_signal = 0
        self.last_reason = ""
        self.server: _ForkServer | None = None

    def log(self, line: str) -> None:
        print(f"parallel: {line}", file=self.out, flush=True)

    def run(self) -> tuple[int, str]:
        tasks = _Tasks.ensure(self.s)
        summary = _read_json(os.path.join(self.state, "summary.json"), wait=2.0) or {}
        self.forgiven = frozenset(f"{f['batch']}.{f['attempt']}" for f in summary.get("failures", ()))
        self.tasks = tasks
        self.beat = os.path.join(self.state, "procs", f"{_HOST}.{os.getpid()}")
        with open(self.beat, "w", encoding="utf-8") as handle:
            handle.write(json.dumps({"pid": os.getpid(), "host": _HOST, "started": self.started}))
        previous = self._handle_signals()
        try:
            view = self.view()
            self.log(
                f"{tasks.count} mini-batches of up to {tasks.size} ({len(tasks.items)} items), "
                f"{len(view.done)} already done; {self.s['workers']} workers in process {os.getpid()}"
            )
            if not view.settled:
                self.server = self.start_fork_server()
                if self.stop_signal:
                    return self.finish()
                self.children = [self.spawn() for _ in range(self.s["workers"])]
                self.loop()
            return self.finish()
        finally:
            self._restore_signals(previous)
            for child in self.children:
                if child.proc.poll() is None:
                    child.proc.kill()
                    child.proc.wait()
            if self.server is not None:
                self.server.close()
            if os.path.exists(self.beat):
                os.unlink(self.beat)

    def start_fork_server(self) -> _ForkServer | None:
        """The fork server, once it has imported the entry script; None: workers start afresh."""
        if not _ForkServer.usable():
            return None
        adopted = self.adopt_fork_server()
        if adopted is not None or self.stop_signal:
            return adopted
        try:
            server = _ForkServer(self.worker_config(), self.worker_env())
        except OSError as exc:
            self.log(f"no fork server ({type(exc).__name__}: {exc}); workers start afresh")
            return None
        if server.wait_ready(lambda: self.stop_signal) and server.proc is not None:
            self.log(f"workers fork from process {server.proc.pid}, which imported the entry script")
            return server
        server.close()
        if server.reason and not self.stop_signal:
            self.log(f"no fork server ({server.reason}); workers start afresh")
        return None

    def adopt_fork_server(self) -> _ForkServer | None:
        """The fork server started ahead of this step (``$AZBAI_PARALLEL_WARM``), when there is one that fits."""
        address = os.environ.get(WARM_ENV)
        if not address or not hasattr(os, "pidfd_open"):
            return None
        try:
            server = _ForkServer.adopt(address, self.worker_config(), self.worker_env())
        except OSError as exc:
            self.log(f"no fork server started ahead of the step ({exc.strerror or exc}); starting one")
            return None
        if server.wait_ready(lambda: self.stop_signal) and server.proc is not None:
            self.log(
                f"workers fork from process {server.proc.pid}, started ahead of the step, "
                "which imported the entry script"
            )
            return server
        server.close()
        if server.reason and not self.stop_signal:
            self.log(f"the fork server started ahead of the step cannot serve: {server.reason}; starting one")
        return None

    def worker_config(self) -> dict[str, Any]:
        return dict(self.s, supervisor=os.getpid(), forgiven=sorted(self.forgiven))

    def worker_env(self) -> dict[str, str]:
        env = dict(os.environ, **{OUTPUT_ENV: self.s["output"]})
        env.pop(WARM_ENV, None)  # the engine's note to this supervisor, not the entry script's business
        return env

    def view(self) -> _View:
        return _View(self.state, self.tasks, self.forgiven, self.s["max_tries"])

    def spawn(self) -> _Child:
        """A new worker: forked by the fork server if there is one that still serves, else a fresh interpreter."""
        read_fd, write_fd = os.pipe()
        wake_read, wake_write = os.pipe()
        try:
            proc: subprocess.Popen[bytes] | _Forked | None = None
            if self.server is not None:
                proc = self.server.fork(write_fd, wake_read)
                if proc is None:
                    self.log(f"{self.server.reason}; workers start afresh from now on")
                    self.server = None
            if proc is None:
                config = dict(self.worker_config(), report_fd=write_fd, wake_fd=wake_read)
                proc = subprocess.Popen(
                    [sys.executable, "-c", _BOOT, os.path.abspath(__file__), json.dumps(config)],
                    env=self.worker_env(),
                    pass_fds=(write_fd, wake_read),
                )
        except BaseException:
            os.close(read_fd)
            os.close(wake_write)
            raise
        finally:
            os.close(write_fd)
            os.close(wake_read)
        os.set_blocking(read_fd, False)
        os.set_blocking(wake_write, False)
        return _Child(proc, read_fd, wake_write)

    def wake(self, but: _Child | None = None) -> None:
        """Tell the waiting workers that a mini-batch ended: it may have settled the step, or left a retry."""
        for child in self.children:
            if child.wake is not None and child is not but:
                # a full pipe already holds news; a closed one belongs to a worker that has gone
                with contextlib.suppress(BlockingIOError, BrokenPipeError):
                    os.write(child.wake, b"\0")

    def loop(self) -> None:
        last_progress = 0.0
        last_beat = time.monotonic()
        shown: tuple[int, int, int] | None = None
        while True:
            # a worker's reports until its pipe ends, then its exit: a fresh worker's pidfd, a forked one's status
            # on the fork server's socket (the timeout is for the heartbeat, the progress line and the timeouts)
            fds = [c.fd for c in self.children if c.fd is not None and not c.ended]
            fds += [c.exit_fd for c in self.children if c.ended and c.exit_fd is not None]
            server = self.server
            if server is not None and server.proc is not None:
                fds.append(server.sock.fileno())
            if fds:
                readable, _, _ = select.select(fds, [], [], _POLL)
                for child in self.children:
                    if child.fd in readable and not child.ended:
                        self.read(child)
            else:
                time.sleep(_POLL)
            if self.stop_signal:
                self.terminate()
                return
            for index, child in enumerate(self.children):
                if child.proc.poll() is not None and child.fd is not None:
                    self.read(child, final=True)
                    replacement = self.reap(child)
                    self.wake()  # a claim it held is failed or stale now: another worker may take it
                    if replacement is not None:
                        self.children[index] = replacement
                elif child.current is not None and time.monotonic() - child.current[2] > self.s["timeout"]:
                    child.timed_out = True
                    child.proc.kill()
            if self.fatal is not None:
                self.terminate()
                return
            now = time.monotonic()
            if now - last_beat > _HEARTBEAT_EVERY:
                with open(self.beat, "a", encoding="utf-8"):
                    os.utime(self.beat)
                last_beat = now
            if now - last_progress > _PROGRESS_EVERY:
                last_progress = now
                view = self.view()
                counts = (len(view.done), view.retries, len(view.given_up))
                if counts != shown:
                    shown = counts
                    self.log(
                        f"{counts[0]}/{self.tasks.count} mini-batches done, {counts[1]} retried, "
                        f"{counts[2]} given up"
                    )
            if all(c.fd is None for c in self.children):
                return

    def read(self, child: _Child, final: bool = False) -> None:
        """Take the JSON lines the worker wrote to its report pipe."""
        assert child.fd is not None
        while True:
            try:
                chunk = os.read(child.fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                child.ended = True
                break
            child.buffer += chunk
        *lines, child.buffer = child.buffer.split(b"\n")
        for line in lines:
            event = json.loads(line)
            kind = event["event"]
            if kind == "start":
                child.current = (event["batch"], event["attempt"], time.monotonic())
            elif kind == "end":
                child.current = None
                self.wake(but=child)
                if event.get("error"):
                    self.log(
                        f"mini-batch {_bid(event['batch'])} attempt {event['attempt'] + 1} failed: "
                        f"{event['error']}"
                    )
            elif kind == "fatal":
                child.reason = event["reason"]
        if final:
            child.close()

    def reap(self, child: _Child) -> _Child | None:
        """Handle a worker's exit; return its replacement when one should run."""
        code = child.proc.returncode
        if code is None or code == 0 or self.stop_signal:
            return None
        if code == _W_LOAD:
            self.fatal = (EXIT_ENTRY, child.reason or f"the entry script {self.s['entry']} cannot be loaded")
            return None
        if code == _W_ABORT:
            self.aborted = True
            return None
        if child.current is not None:
            batch, attempt, _ = child.current
            how = _exit_text(code)
            if child.timed_out:
                error = f"run() exceeded the timeout of {self.s['timeout']:g}s; worker killed"
            else:
                error = f"the worker process {how} during run()"
            kind = "timeout" if child.timed_out else "crash"
            if _record_failure(self.state, batch, attempt, self.tasks.batch(batch), kind, error):
                self.log(f"mini-batch {_bid(batch)} attempt {attempt + 1} failed: {error}")
        elif not child.timed_out:  # timed out but finished just before the kill: nothing failed
            self.last_reason = child.reason or f"a worker process {_exit_text(code)} outside run()"
            self.budget -= 1
            if self.budget < 0:
                return None
            self.log(f"worker {child.proc.pid}: {self.last_reason}; restarting it")
        if self.aborted or self.view().settled:
            return None
        return self.spawn()

    def terminate(self) -> None:
        """Stop every worker: SIGTERM, SIGKILL after a grace period. Their claims go stale; nothing failed."""
        for child in self.children:
            if child.proc.poll() is None:
                child.proc.terminate()
        deadline = time.monotonic() + _GRACE
        for child in self.children:
            _wait_or_kill(child.proc, max(0.0, deadline - time.monotonic()))
            child.close()

    def finish(self) -> tuple[int, str]:
        """Decide the exit status, write summary.json; rewrite it while peers' markers keep appearing."""
        while True:
            view = self.view()
            code, reason = self.outcome(view)
            _write_json(os.path.join(self.state, "summary.json"), self.summary(view, code, reason))
            # the last writer wins, so the last process to finish must not write a view older than its peers'
            if self.view().signature == view.signature:
                break
        self.log(
            f"{len(view.done)}/{self.tasks.count} mini-batches done, {view.retries} retried, "
            f"{len(view.given_up)} given up ({view.failed_items()} items) "
            f"in {time.time() - self.started:.1f}s"
        )
        return code, reason

    def outcome(self, view: _View) -> tuple[int, str]:
        code, reason = EXIT_OK, ""
        threshold = self.s["error_threshold"]
        failed = view.failed_items()
        if self.stop_signal:
            code, reason = 128 + self.stop_signal, f"stopped by {signal.Signals(self.stop_signal).name}"
        elif self.fatal is not None:
            code, reason = self.fatal
        elif threshold != -1 and failed > threshold:
            first = min(view.given_up)
            last = _read_json(
                os.path.join(self.state, "failed", f"{_bid(first)}.{max(view.failed[first])}.json")
            )
            items = self.tasks.batch(first)
            shown = ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")
            reason = (
                f"{failed} failed items exceed the error threshold {threshold}: mini-batch {_bid(first)} "
                f"({shown}) failed {len(view.failed[first])} times, last: {(last or {}).get('error', '?')}"
            )
            code = EXIT_FAILED
        elif not view.settled:
            code = EXIT_ENTRY
            reason = f"workers keep failing outside run(), gave up after {self.restarts} restarts: " + (
                self.last_reason or "unknown"
            )
        return code, reason

    def summary(self, view: _View, code: int, reason: str) -> dict[str, Any]:
        workers: dict[str, dict[str, int]] = {}
        done_items = 0
        for batch in sorted(view.done):
            marker = _read_json(os.path.join(self.state, "done", f"{_bid(batch)}.json"), wait=2.0) or {}
            key = f"{marker.get('host')}:{marker.get('pid')}"
            entry = workers.setdefault(key, {"batches": 0, "items": 0})
            entry["batches"] += 1
            entry["items"] += len(self.tasks.batch(batch))
            done_items += len(self.tasks.batch(batch))
        failures = []
        for name in sorted(_names(os.path.join(self.state, "failed"))):
            marker = _read_json(os.path.join(self.state, "failed", name), wait=2.0) or {}
            batch_id, attempt = name.split(".")[:2]
            failures.append(
                {
                    "batch": batch_id,
                    "attempt": int(attempt),
                    "kind": marker.get("kind"),
                    "error": marker.get("error"),
                }
            )
        failed_batches: list[dict[str, Any]] = []
        for batch in sorted(view.given_up):
            errors = [f["error"] for f in failures if f["batch"] == _bid(batch)]
            failed_batches.append(
                {
                    "batch": _bid(batch),
                    "items": self.tasks.batch(batch),
                    "attempts": len(view.failed[batch]),
                    "error": errors[-1] if errors else None,
                }
            )
        return {
            "complete": view.settled,
            "exit_code": code,
            "reason": reason,
            "batches": self.tasks.count,
            "items": len(self.tasks.items),
            "mini_batch_size": self.tasks.size,
            "done_batches": len(view.done),
            "done_items": done_items,
            "failed_batches": failed_batches,
            "failed_items": [item for fb in failed_batches for item in fb["items"]],
            "pending_batches": self.tasks.count - len(view.done) - len(view.given_up),
            "retries": view.retries,
            "failed_attempts": view.failed_total,
            "failures": failures,
            "workers": workers,
            "written_by": f"{_HOST}:{os.getpid()}",
            "started": self.started,
            "finished": time.time(),
            "seconds": round(time.time() - self.started, 3),
        }

    def _handle_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}

        def handler(signum: int, frame: Any) -> None:
            self.stop_signal = signum

        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, handler)
        return previous

    @staticmethod
    def _restore_signals(previous: dict[int, Any]) -> None:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


# --- the worker ---------------------------------------------------------------------------------------------


def _worker_main(argv: Sequence[str]) -> int:
    """A worker process: load the entry script, init() once, then claim and run mini-batches while any is left."""
    return _worker(json.loads(argv[0]), None)


def _fork_server_main(argv: Sequence[str]) -> NoReturn:
    """The fork server (:class:`_ForkServer`): import the entry script, then fork a worker per request.

    Requests come on the control socket, each a fork (with the worker's report pipe attached) or a signal for
    a worker; answers go back on it: ready or failed once, each fork's pid, each worker's exit status. When the
    socket closes (the supervisor is done, or died) the fork server exits; its workers notice and exit too.
    """
    config = json.loads(argv[0])
    control = socket.socket(fileno=config.pop("control_fd"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    _exit_without_teardown(_serve_forks(control, config))


def _serve_forks(control: socket.socket, config: dict[str, Any]) -> int:
    """A fork server's life once it knows its supervisor (``control``): import the entry script, fork on request."""

    def tell(**message: Any) -> None:
        control.send(json.dumps(message).encode())

    try:
        module = _load_entry(config["entry"], config["arguments"])
    except BaseException as exc:
        tell(failed=f"the entry script does not import here: {_one_line(exc)}")
        return 0
    tell(ready=True)
    children: set[int] = set()
    # a pidfd per worker, readable once it has exited, so that its supervisor hears of the exit at once
    exits: dict[int, int] = {}
    while True:
        readable, _, _ = select.select([control, *exits.values()], [], [], _POLL)
        for pid, code in _reap(children):
            if pid in exits:
                os.close(exits.pop(pid))
            tell(exit=pid, code=code)
        if control not in readable:
            continue
        data, fds, _, _ = socket.recv_fds(control, 65536, 2)
        if not data:
            return 0
        request = json.loads(data)
        if "signal" in request:
            if request["pid"] in children:  # not reaped yet: the pid is still that worker's
                os.kill(request["pid"], request["signal"])
            continue
        # flushed before the fork, else what the import printed is printed again by each worker
        _flush_standard_streams()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                _forked(control)
                for fd in exits.values():
                    os.close(fd)
                wake = fds[1] if len(fds) > 1 else None
                code = _worker(dict(config, report_fd=fds[0], wake_fd=wake, parent=os.getppid()), module)
                atexit._run_exitfuncs()  # what a fresh worker's interpreter would run at its exit
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                _flush_standard_streams()
                os._exit(code)
        for fd in fds:
            os.close(fd)
        children.add(pid)
        exit_fd = _pidfd(pid)
        if exit_fd is not None:
            exits[pid] = exit_fd
        tell(forked=pid)


def _pidfd(pid: int) -> int | None:
    """A pidfd of this process's child ``pid`` (readable once it has exited); None where there are none."""
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return int(os.pidfd_open(pid))
    except OSError:
        return None


def _reap(children: set[int]) -> list[tuple[int, int]]:
    """Collect the children of ``children`` that have exited (dropped from it): their pids and exit codes."""
    reaped = []
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            break
        children.discard(pid)
        reaped.append((pid, os.waitstatus_to_exitcode(status)))
    return reaped


def _forked(control: socket.socket) -> None:
    """What a child of a fork server or a zygote does first: let go of its parent's socket, reseed ``random``."""
    control.close()
    if "random" in sys.modules:
        sys.modules["random"].seed()


def _flush_standard_streams() -> None:
    """Flush stdout and stderr, whatever they are now (a closed or broken stream is no reason to fail)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _exit_without_teardown(code: int) -> NoReturn:
    """End a fork server as its forked workers end: atexit's functions, the standard streams flushed, then exit.

    A fork server holds what the entry script imported, and tearing that down is most of its exit (torch: 0.32–0.42
    s against 0.02 s, measured), time its supervisor waits before the step can end. It never runs ``init()`` or
    ``run()``, so the only user code it ran is the entry script's module level, whose exit work atexit holds.
    """
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    _flush_standard_streams()
    os._exit(code)


def preload_modules(entry: str | os.PathLike[str]) -> list[str]:
    """What the entry script imports at its top level from outside its folder (``torch``, ``PIL.Image``, …).

    Read from its source, not run: ``import a.b`` gives ``a.b``; ``from a import b`` gives ``a`` and ``a.b`` (which
    may not be a module). Names its own folder provides (``stylenet`` beside it) are left out: those are imported
    with the entry script, where the step runs.
    """
    path = Path(entry)
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except (OSError, SyntaxError, ValueError):
        return []
    names: list[str] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                names.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.append(node.module)
                names.extend(f"{node.module}.{alias.name}" for alias in node.names if alias.name != "*")
            elif isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)

    visit(tree.body)
    return [
        name
        for name in dict.fromkeys(names)
        if name.partition(".")[0] != "__future__" and not _provided_by(name.partition(".")[0], path.parent)
    ]


def _provided_by(top: str, folder: Path) -> bool:
    """Whether ``folder`` (first on ``sys.path`` when the entry script runs) has a module or package ``top``."""
    try:
        return (folder / f"{top}.py").exists() or (folder / top).is_dir() or any(folder.glob(f"{top}.*.so"))
    except OSError:
        return True  # unreadable: leave the name to the real import


@dataclass
class WarmServer:
    """A fork server started ahead of a parallel step (:func:`prestart`, :meth:`WarmPool.prestart`), until the
    step's supervisor adopts it.

    ``proc`` is the engine's child (:func:`prestart`), or, forked by a pool's zygote, a pidfd handle that comes
    from the zygote once it has forked (``None`` until then)."""

    proc: subprocess.Popen[bytes] | _Adopted | None
    address: str
    modules: tuple[str, ...]
    ready_fd: int | None = None
    zygote: _Zygote | None = None

    def listening(self, timeout: float = 10.0) -> bool:
        """Wait until its socket takes connections (tens of milliseconds after the start; a zygote's first fork
        waits for the zygote's imports); False: it never will."""
        if self.ready_fd is None:
            return False
        if self.zygote is not None:
            timeout = max(timeout, _ZYGOTE_READY_SECONDS)  # a zygote that dies closes the pipe: no wait
        said = self._read_ready(timeout)
        if said == b"listening" and self.zygote is not None:
            self.proc = self.zygote.forked(self.address)
            return self.proc is not None
        return said == b"listening"

    def _read_ready(self, timeout: float) -> bytes:
        """What it said on its ready pipe within ``timeout`` (``b"listening"``, or nothing); the pipe is closed."""
        assert self.ready_fd is not None
        readable, _, _ = select.select([self.ready_fd], [], [], timeout)
        said = os.read(self.ready_fd, 64) if readable else b""
        os.close(self.ready_fd)
        self.ready_fd = None
        return said

    def close(self) -> None:
        """End it (adopted, it is done when its step is; never adopted, it is not needed) and reap it."""
        if self.ready_fd is not None:
            said = self._read_ready(0)
            if self.zygote is not None:
                if said == b"listening":  # forked and waiting for a supervisor: its pid is on its way
                    self.proc = self.zygote.forked(self.address)
                else:  # not forked yet: it will find the pipe closed and exit at once
                    self.zygote.discard(self.address)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            _wait_or_kill(self.proc, _GRACE)


def _prestart_usable() -> bool:
    return _ForkServer.usable() and hasattr(os, "pidfd_open") and os.environ.get(PRESTART_ENV, "1") != "0"


def prestart(entry: str | os.PathLike[str], env: dict[str, str]) -> WarmServer | None:
    """Start a fork server for the entry script's step before the step itself, so that its imports overlap.

    It imports what the entry script imports from outside its folder (:func:`preload_modules`) in ``env``, which
    should be the step's environment, then waits on an abstract socket (its name goes in the step's environment
    as ``$AZBAI_PARALLEL_WARM``; only processes of this user are served). The step's supervisor adopts it: it
    checks that the environments agree (but for :data:`_PER_JOB_ENV`), takes the supervisor's environment, working
    directory and standard streams, imports the entry script itself and serves forks as any fork server does.
    (``/proc/PID/environ`` keeps showing ``env``: give it what finds the step's processes there.) Where
    anything does not fit, the supervisor starts its own, as without this. It exits when the process that started
    it dies. None where there is nothing to gain or it cannot be (no fork server here, nothing to import,
    ``AZBAI_PARALLEL_PRESTART=0``). An engine that runs pipelines again and again uses a :class:`WarmPool`.
    """
    if not _prestart_usable():
        return None
    modules = preload_modules(entry)
    if not modules:
        return None
    address = _warm_address()
    # It binds the socket itself (a supervisor reads its pid from the socket's peer credentials, which are those
    # of the process that listens) and says so on this pipe; WarmServer.listening() waits for that.
    ready_read, ready_write = os.pipe()
    config = {"address": address, "ready_fd": ready_write, "preload": modules, "watch": os.getpid()}
    try:
        proc = _start_importer(_WARM_BOOT, config, env, ready_write)
    except OSError:
        os.close(ready_read)
        return None
    finally:
        os.close(ready_write)
    return WarmServer(proc, address, tuple(modules), ready_read)


def _start_importer(
    boot: str, config: dict[str, Any], env: dict[str, str], fd: int
) -> subprocess.Popen[bytes]:
    """A fresh interpreter running ``boot`` with ``config``, that imports ahead of a step: in ``/`` (nothing in a
    working directory shadows what it imports; the step's is taken on adoption), silent, ``fd`` passed to it."""
    return subprocess.Popen(
        [sys.executable, "-c", boot, os.path.abspath(__file__), json.dumps(config)],
        env=env,
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        pass_fds=(fd,),
    )


def _warm_address() -> str:
    return f"azbai-warm-{os.getpid()}-{uuid.uuid4().hex}"


#: how long a fork server forked by a zygote may take to listen: the zygote's first fork waits for its imports
_ZYGOTE_READY_SECONDS = 120.0
#: zygotes a pool keeps (one per set of modules and shared environment); the oldest goes first
_POOL_SIZE = 4


class WarmPool:
    """Fork servers started ahead of parallel steps, each forked from a process that imported their modules once.

    For an engine that runs pipelines again and again in one process (a trigger, a schedule): :func:`prestart`
    starts a fresh interpreter for every run's step, which imports torch again (~1 s of CPU on the run's critical
    path, or on a core the step before it needs). A pool keeps a *zygote* per set of preloaded modules and
    environment: a process that imported them once, in the environment the steps share (without their
    :data:`_PER_JOB_ENV` variables), and forks each step's fork server from there in milliseconds. What such a fork
    server does from then on is what :func:`prestart`'s does: it binds its own socket, is adopted by the step's
    supervisor on the same terms, imports the entry script there and serves forks.

    A zygote exits when the pool is closed (:meth:`close`, or when the pool is garbage-collected) or when the
    process that made it dies; a fork server it forked and nobody adopted exits with it. Forked processes show the
    zygote's environment in ``/proc/PID/environ``, which has no job's variables: what ends them is the chain of
    exits (an adopted fork server ends with its supervisor, its workers with it). ``AZBAI_PARALLEL_POOL=0`` makes
    the pool start every fork server afresh.
    """

    def __init__(self) -> None:
        self._zygotes: dict[tuple[Any, ...], _Zygote] = {}
        self._finalizer = weakref.finalize(self, _close_zygotes, self._zygotes)

    def prestart(self, entry: str | os.PathLike[str], env: dict[str, str]) -> WarmServer | None:
        """:func:`prestart`, forked from this pool's zygote for the entry script's modules and ``env``."""
        if not _prestart_usable():
            return None
        if os.environ.get(POOL_ENV, "1") == "0":
            return prestart(entry, env)
        modules = preload_modules(entry)
        if not modules:
            return None
        shared = {name: value for name, value in env.items() if not _PER_JOB_ENV.fullmatch(name)}
        key = (tuple(modules), tuple(sorted(shared.items())))
        zygote = self._zygotes.get(key)
        if zygote is not None and not zygote.alive():
            zygote.close()
            del self._zygotes[key]
            zygote = None
        if zygote is None:
            while len(self._zygotes) >= _POOL_SIZE:
                self._zygotes.pop(next(iter(self._zygotes))).close()
            zygote = _Zygote.start(tuple(modules), shared)
            if zygote is None:
                return prestart(entry, env)
            self._zygotes[key] = zygote
        server = zygote.fork()
        if server is None:  # the zygote is gone: a fresh one next time, a fresh fork server now
            self._zygotes.pop(key).close()
            return prestart(entry, env)
        return server

    def pids(self) -> list[int]:
        """The zygotes' process ids."""
        return [zygote.proc.pid for zygote in self._zygotes.values()]

    def close(self) -> None:
        """End the zygotes (the fork servers they forked that were adopted serve their steps to the end); a later
        :meth:`prestart` starts new ones, which the pool's garbage collection ends in turn."""
        _close_zygotes(self._zygotes)


def _close_zygotes(zygotes: dict[tuple[Any, ...], _Zygote]) -> None:
    while zygotes:
        zygotes.pop(next(iter(zygotes))).close()


class _Zygote:
    """The engine's end of a zygote (:class:`WarmPool`): its process and the socket it takes fork requests on."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket, modules: tuple[str, ...]) -> None:
        self.proc = proc
        self.sock = sock
        self.modules = modules
        self._replies: dict[str, _Adopted] = {}
        self._discarded: set[str] = set()

    @classmethod
    def start(cls, modules: tuple[str, ...], env: dict[str, str]) -> _Zygote | None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        config = {"control_fd": theirs.fileno(), "preload": list(modules), "watch": os.getpid()}
        try:
            proc = _start_importer(_ZYGOTE_BOOT, config, env, theirs.fileno())
        except OSError:
            ours.close()
            return None
        finally:
            theirs.close()
        return cls(proc, ours, modules)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def fork(self) -> WarmServer | None:
        """Ask for a fork server (forked once the zygote's imports are done); None when the zygote is gone."""
        address = _warm_address()
        ready_read, ready_write = os.pipe()
        try:
            socket.send_fds(self.sock, [json.dumps({"address": address}).encode()], [ready_write])
        except OSError:
            os.close(ready_read)
            return None
        finally:
            os.close(ready_write)
        return WarmServer(None, address, self.modules, ready_read, self)

    def forked(self, address: str) -> _Adopted | None:
        """The fork server forked for ``address``, as the zygote reports it (right after the fork)."""
        while address not in self._replies:
            readable, _, _ = select.select([self.sock], [], [], _GRACE)
            if not readable:
                return None
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, 4096, 1)
            except OSError:
                return None
            if not data or not fds:
                for fd in fds:
                    os.close(fd)
                return None
            reply = json.loads(data)
            if reply["address"] in self._discarded:  # it exits by itself (its pipe was closed)
                self._discarded.discard(reply["address"])
                os.close(fds[0])
                continue
            self._replies[reply["address"]] = _Adopted(reply["pid"], fds[0])
        return self._replies.pop(address)

    def discard(self, address: str) -> None:
        self._discarded.add(address)

    def close(self) -> None:
        """End the zygote (its socket's end is its signal to exit) and reap it."""
        for handle in self._replies.values():
            if handle.poll() is None:
                handle.terminate()
                _wait_or_kill(handle, _GRACE)
        self._replies.clear()
        self.sock.close()
        _wait_or_kill(self.proc, _GRACE)


def _zygote_main(argv: Sequence[str]) -> NoReturn:
    """A pool's zygote (:class:`WarmPool`): import, then fork a fork server per request."""
    _exit_without_teardown(_zygote(json.loads(argv[0])))


def _zygote(config: dict[str, Any]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the engine's to handle
    control = socket.socket(fileno=config["control_fd"])
    loaded = _preload(config["preload"])
    children: set[int] = set()
    while True:
        if os.getppid() != config["watch"]:
            return 0  # whoever started it is gone: no run will come
        readable, _, _ = select.select([control], [], [], 0.2)
        _reap(children)
        if not readable:
            continue
        data, fds, _, _ = socket.recv_fds(control, 65536, 1)
        if not data:
            return 0  # the pool is closed
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            continue
        request = json.loads(data)
        zygote = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _forked(control)
                code = _warm_server(
                    {"address": request["address"], "ready_fd": fds[0], "watch": zygote}, loaded
                )
            except BaseException:
                code = 1
            finally:
                _exit_without_teardown(code)
        os.close(fds[0])
        children.add(pid)
        pidfd = os.pidfd_open(pid)  # type: ignore[attr-defined,unused-ignore]
        try:
            socket.send_fds(
                control, [json.dumps({"address": request["address"], "pid": pid}).encode()], [pidfd]
            )
        except OSError:
            return 0
        finally:
            os.close(pidfd)


def _preload(names: Sequence[str]) -> list[str]:
    """Import ``names``; the top-level names of those that imported (one that does not is imported, or fails,
    with the entry script, in the step)."""
    loaded = []
    for name in names:
        try:
            importlib.import_module(name)
            loaded.append(name.partition(".")[0])
        except Exception:
            continue
    return loaded


def _warm_server_main(argv: Sequence[str]) -> NoReturn:
    """A fork server started ahead of its step (:func:`prestart`): import, wait to be adopted, then serve forks."""
    _exit_without_teardown(_warm_server(json.loads(argv[0])))


def _warm_server(config: dict[str, Any], loaded: list[str] | None = None) -> int:
    """The life of a fork server started ahead of its step, until it has served its supervisor or been refused.

    ``loaded``: what a zygote imported before it forked this one; None: import ``config["preload"]`` here."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(b"\0" + config["address"].encode())
    listener.listen(1)  # before the imports: a supervisor that comes meanwhile waits for them
    try:
        os.write(config["ready_fd"], b"listening")
    except BrokenPipeError:
        return 0  # nobody waits for it any more
    finally:
        os.close(config["ready_fd"])
    if loaded is None:
        loaded = _preload(config["preload"])
    started_env = dict(os.environ)
    watch = config["watch"]
    while True:
        if os.getppid() != watch:
            return 0  # whoever started it is gone: no step will come
        readable, _, _ = select.select([listener], [], [], 0.2)
        if not readable:
            continue
        conn, _ = listener.accept()
        _pid, uid, _gid = _PEERCRED.unpack(
            conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        )
        if uid == os.getuid():
            listener.close()  # one supervisor adopts it; another one starts its own
            break
        conn.close()
    data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)

    def refuse(reason: str) -> int:
        with contextlib.suppress(OSError):
            conn.send(json.dumps({"failed": reason}).encode())
        return 0

    if not data or len(fds) != 3:
        return refuse("it was adopted without the supervisor's standard streams")
    request = json.loads(data)
    env, cwd = request["env"], request["cwd"]
    differs = sorted(
        name
        for name in set(env) | set(started_env)
        if not _PER_JOB_ENV.fullmatch(name) and env.get(name) != started_env.get(name)
    )
    if differs:
        return refuse(f"it was started in another environment ({', '.join(differs[:5])} differ)")
    folders = [Path(cwd), Path(request["config"]["entry"]).parent]
    shadowed = sorted({top for top in loaded for folder in folders if _provided_by(top, folder)})
    if shadowed:
        return refuse(f"the step's folders have modules of the names it imported ({', '.join(shadowed)})")
    # what the imports printed goes where it went (nowhere), not to the step; then stdin, stdout and stderr are the
    # supervisor's, as those of a fork server it started are
    _flush_standard_streams()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    return _serve_forks(conn, request["config"])


def _worker(config: dict[str, Any], module: Any) -> int:
    """The worker's life, with the entry script already imported (``module``) or to import now (None)."""
    fd = config["report_fd"]
    os.set_inheritable(fd, False)  # the entry script's own subprocesses must not hold the report pipe
    wake = config.get("wake_fd")
    if wake is not None:
        os.set_inheritable(wake, False)
        os.set_blocking(wake, False)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    parent = config.get("parent", config["supervisor"])

    def report(**event: Any) -> None:
        try:
            os.write(fd, (json.dumps(event) + "\n").encode())
        except BrokenPipeError:
            os._exit(_W_ORPHAN)

    def watchdog() -> None:
        # a worker whose supervisor (or fork server) died must not keep working on its own
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(_W_ORPHAN)

    threading.Thread(target=watchdog, name="azbai-parallel-watchdog", daemon=True).start()
    entry = config["entry"]
    if module is None:
        try:
            module = _load_entry(entry, config["arguments"])
        except BaseException as exc:
            report(event="fatal", reason=f"cannot load the entry script {entry}: {_one_line(exc)}")
            traceback.print_exc()
            return _W_LOAD
    run = getattr(module, "run", None)
    if not callable(run):
        report(event="fatal", reason=f"the entry script {entry} defines no run(mini_batch) function")
        return _W_LOAD
    init = getattr(module, "init", None)
    if callable(init):
        try:
            init()
        except BaseException as exc:
            report(event="fatal", reason=f"init() failed: {_one_line(exc)}")
            traceback.print_exc()
            return _W_INIT
    state = config["state"]
    tasks = _Tasks.load(state)
    forgiven = frozenset(config["forgiven"])
    threshold = config["error_threshold"]
    max_tries = config["max_tries"]
    # First every never-claimed mini-batch, in order, by O_EXCL on attempt 0 alone: O(1) per claim. Only then
    # whole-folder scans for retries (failed or stale claims), which cost O(mini-batches) each.
    fresh = iter(range(tasks.count))
    claimed = {
        int(n[:-2]) for n in _names(os.path.join(state, "claims")) if n.endswith(".0") and n[:-2].isdigit()
    }
    pause = _POLL
    while True:
        if threshold != -1:
            failed = _parse_failed(_names(os.path.join(state, "failed")), forgiven)
            given_up = [
                b for b, tries in failed.items() if len(tries) >= max_tries and not _is_done(state, b)
            ]
            if sum(len(tasks.batch(b)) for b in given_up) > threshold:
                return _W_ABORT
        picked = next(
            (b for b in fresh if b not in claimed and _claim(state, b, 0, config["supervisor"])), None
        )
        attempt = 0
        if picked is None:
            view = _View(state, tasks, forgiven, max_tries)
            for batch, attempt in view.candidates():
                if _claim(state, batch, attempt, config["supervisor"]):
                    picked = batch
                    break
            else:
                if view.settled:
                    return 0
                # the rest is claimed by live workers: wait for them to finish or fail. The supervisor tells
                # when one of its own ends a mini-batch; workers of other supervisors are only seen by looking.
                wake = _wait_for_news(wake, pause)
                pause = min(pause * 2, 0.5)
                continue
        if _is_done(state, picked):  # done between our look and our claim
            os.unlink(os.path.join(state, "claims", f"{_bid(picked)}.{attempt}"))
            continue
        report(event="start", batch=picked, attempt=attempt)
        error = _run_batch(run, config, tasks, picked, attempt)
        report(event="end", batch=picked, attempt=attempt, error=error)
        pause = _POLL


def _wait_for_news(wake: int | None, timeout: float) -> int | None:
    """Wait ``timeout`` seconds, or until the supervisor writes to ``wake``; the pipe, or None once it closed."""
    if wake is None:
        time.sleep(timeout)
        return None
    if not select.select([wake], [], [], timeout)[0]:
        return wake
    while True:  # all of it: a worker busy with mini-batches leaves the others' news unread
        try:
            if not os.read(wake, 65536):  # the supervisor is gone; the watchdog ends this worker
                os.close(wake)
                return None
        except BlockingIOError:
            return wake


def _load_entry(path: str, arguments: Sequence[str]) -> Any:
    """Import the entry script as Azure ML does: its folder first on sys.path, sys.argv = [script, *args]."""
    folder = os.path.dirname(path)
    if sys.path and sys.path[0] == "":
        sys.path[0] = folder  # `python -c` put the working directory there; `python script.py` would not
    else:
        sys.path.insert(0, folder)
    sys.argv = [path, *arguments]
    name = os.path.splitext(os.path.basename(path))[0]
    if name in sys.modules:
        name = f"_azbai_entry_{name}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"not a Python file: {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _claim(state: str, batch: int, attempt: int, supervisor: int) -> bool:
    path = os.path.join(state, "claims", f"{_bid(batch)}.{attempt}")
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    data = {
        "pid": os.getpid(),
        "host": _HOST,
        "boot": _BOOT_ID,
        "supervisor": supervisor,
        "started": time.time(),
    }
    try:
        os.write(fd, json.dumps(data).encode())
    finally:
        os.close(fd)
    return True


def _run_batch(run: Any, config: dict[str, Any], tasks: _Tasks, batch: int, attempt: int) -> str | None:
    """Call run() on one mini-batch and write its done or failure marker; return the error, if any."""
    state = config["state"]
    items = tasks.batch(batch)
    paths = [os.path.join(config["input"], *item.split("/")) for item in items]
    started = time.time()
    try:
        result = run(paths)
        if result is None or isinstance(result, (str, bytes)) or not hasattr(result, "__len__"):
            raise TypeError(
                "run() must return one result per item (a list, tuple or DataFrame), "
                f"not {type(result).__name__}"
            )
        if len(result) != len(items):
            raise ValueError(f"run() returned {len(result)} results for {len(items)} items")
    except Exception as exc:
        error = _one_line(exc)
        _record_failure(state, batch, attempt, items, "exception", error, traceback.format_exc())
        return error
    done = {
        "batch": _bid(batch),
        "attempt": attempt,
        "items": items,
        "results": _jsonable(result),
        "host": _HOST,
        "pid": os.getpid(),
        "seconds": round(time.time() - started, 3),
    }
    if not _write_json(os.path.join(state, "done", f"{_bid(batch)}.json"), done, exclusive=True):
        print(
            f"parallel: mini-batch {_bid(batch)} was already done elsewhere; result discarded",
            file=sys.stderr,
        )
    return None


def _jsonable(result: Any) -> Any:
    """Results as JSON can hold them; a DataFrame (no pandas import here) as its records."""
    if isinstance(result, (list, tuple)):
        return list(result)
    to_dict = getattr(result, "to_dict", None)
    if callable(to_dict):
        try:
            return to_dict(orient="records")
        except Exception:
            pass
    return [str(r) for r in result]


if __name__ == "__main__":
    sys.exit(main())
