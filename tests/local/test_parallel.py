"""The local ParallelRunStep driver, run for real: several driver processes, worker processes, crashes, kills.

Entry scripts are in ``tests/data/parallel/``; ``record.py`` writes ``output/items/<item>`` (``<item> <pid>``)
and ``output/init/<pid>`` (one line per init() call), and misbehaves on request (``--crash-on``, ``--raise-on``,
``--short-on``, ``--hang-on``). The items are tiny text files.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from azbai.local import parallel

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "parallel"
RECORD = DATA / "record.py"


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Driver processes started by a test, each in its own session; any still running is killed by group."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Run:
    """The folders of one parallel run under ``tmp_path``."""

    def __init__(self, tmp_path: Path, count: int, name: str = "run") -> None:
        base = tmp_path / name
        self.input = base / "in"
        self.output = base / "out"
        self.state = base / "state"
        self.marks = base / "marks"
        self.marks.mkdir(parents=True)
        self.input.mkdir()
        # every fifth item in a subfolder: the work list is recursive and sorted by relative path
        self.items = sorted(
            f"sub/f{i:02d}.txt" if i % 5 == 0 else f"f{i:02d}.txt" for i in range(1, count + 1)
        )
        for item in self.items:
            (self.input / item).parent.mkdir(exist_ok=True)
            (self.input / item).write_text(f"frame {item}\n")

    def argv(self, *options: str, entry: Path = RECORD, entry_args: Sequence[str] = ()) -> list[str]:
        return [
            sys.executable, "-m", "azbai.local.parallel", "--entry-script", str(entry), "--input", str(self.input),
            "--output", str(self.output), "--state", str(self.state), *options,
            "--", "--marks", str(self.marks), *entry_args,
        ]  # fmt: skip

    def start(
        self, procs: list[subprocess.Popen[str]], *options: str, **kwargs: Any
    ) -> subprocess.Popen[str]:
        entry = kwargs.pop("entry", RECORD)
        entry_args = kwargs.pop("entry_args", ())
        proc = subprocess.Popen(
            self.argv(*options, entry=entry, entry_args=entry_args),
            cwd=kwargs.pop("cwd", ROOT),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            **kwargs,
        )
        procs.append(proc)
        return proc

    def drive(
        self, procs: list[subprocess.Popen[str]], *options: str, processes: int = 1, **kwargs: Any
    ) -> list[tuple[int, str, str]]:
        """Start ``processes`` drivers on the same state at once; (exit status, stdout, stderr) of each."""
        started = [self.start(procs, *options, **kwargs) for _ in range(processes)]
        results = []
        for proc in started:
            out, err = proc.communicate(timeout=60)
            results.append((proc.returncode, out, err))
        return results

    def done_markers(self) -> dict[str, dict[str, Any]]:
        return {p.stem: json.loads(p.read_text()) for p in sorted((self.state / "done").glob("*.json"))}

    def done_items(self) -> Counter[str]:
        return Counter(item for marker in self.done_markers().values() for item in marker["items"])

    def summary(self) -> dict[str, Any]:
        return json.loads((self.state / "summary.json").read_text())

    def calls(self, first_item: str) -> int:
        """How many times run() was called on the mini-batch that starts with ``first_item``."""
        path = self.marks / f"calls-{Path(first_item).name}"
        return len(path.read_text().split()) if path.exists() else 0

    def init_counts(self) -> dict[int, int]:
        return {int(p.name): len(p.read_text().splitlines()) for p in (self.output / "init").iterdir()}

    def assert_every_item_once(self) -> None:
        """Each item in exactly one done marker, and its output written by that marker's worker."""
        assert self.done_items() == Counter(self.items)
        for marker in self.done_markers().values():
            for item in marker["items"]:
                name = Path(item).name
                assert (self.output / "items" / name).read_text() == f"{name} {marker['pid']}\n"
            assert marker["results"] == [f"{Path(i).name}:ok" for i in marker["items"]]


def test_two_processes_two_workers_each_item_once(tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    run = Run(tmp_path, 37)
    results = run.drive(
        procs, "--mini-batch-size", "4", "--workers", "2", processes=2, entry_args=["--sleep", "0.1"]
    )

    assert [code for code, _, _ in results] == [0, 0], results
    run.assert_every_item_once()
    assert len(list((run.output / "items").iterdir())) == 37
    assert sorted((run.state / "done").iterdir()) == [run.state / "done" / f"{b:06d}.json" for b in range(10)]
    tasks = json.loads((run.state / "tasks.json").read_text())
    assert tasks["items"] == run.items
    assert tasks["items"][-1] == "sub/f35.txt"
    assert run.done_markers()["000000"]["items"] == ["f01.txt", "f02.txt", "f03.txt", "f04.txt"]
    # init() once per worker process, none in the supervisors; every item done by one of those workers
    inits = run.init_counts()
    assert len(inits) == 4
    assert set(inits.values()) == {1}
    worker_pids = {marker["pid"] for marker in run.done_markers().values()}
    assert worker_pids <= set(inits)
    assert len(worker_pids) >= 2
    summary = run.summary()
    assert summary["complete"] is True
    assert (summary["batches"], summary["items"], summary["done_batches"], summary["done_items"]) == (
        10,
        37,
        10,
        37,
    )
    assert (summary["failed_items"], summary["retries"], summary["failed_attempts"]) == ([], 0, 0)
    assert sum(w["items"] for w in summary["workers"].values()) == 37
    assert sum(w["batches"] for w in summary["workers"].values()) == 10
    for _, out, _ in results:
        assert "parallel: 10/10 mini-batches done, 0 retried" in out


def test_worker_crash_is_retried(tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    run = Run(tmp_path, 37)
    results = run.drive(
        procs, "--mini-batch-size", "4", "--workers", "2", processes=2, entry_args=["--crash-on", "f14.txt"]
    )

    assert [code for code, _, _ in results] == [0, 0], results
    # f11-f13's outputs, written before the crash at f14 (mini-batch 000002), were overwritten by the retry
    run.assert_every_item_once()
    assert (run.marks / "crashed-f14.txt").exists()
    assert run.calls("f11.txt") == 2
    assert run.done_markers()["000002"]["attempt"] == 1
    summary = run.summary()
    assert summary["complete"] is True
    assert (summary["done_items"], summary["retries"], summary["failed_attempts"], summary["failed_items"]) == (
        37, 1, 1, [],
    )  # fmt: skip
    assert summary["failures"] == [
        {
            "batch": "000002",
            "attempt": 0,
            "kind": "crash",
            "error": "the worker process exited with code 9 during run()",
        }
    ]
    inits = run.init_counts()
    assert len(inits) in (
        4,
        5,
    )  # the crashed worker is replaced unless the others already finished everything
    assert set(inits.values()) == {1}
    assert any(
        "mini-batch 000002 attempt 1 failed: the worker process exited with code 9" in out
        for _, out, _ in results
    )


def test_error_threshold(tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    options = ("--mini-batch-size", "4", "--workers", "2", "--max-retries", "1")
    strict = Run(tmp_path, 20, "strict")
    [(code, _, err)] = strict.drive(
        procs, *options, "--error-threshold", "0", entry_args=["--raise-on", "f06.txt"]
    )

    assert code == parallel.EXIT_FAILED
    assert err.count("\n") == 1
    assert "mini-batch 000001 (f06.txt, f07.txt, f08.txt, ...) failed 2 times" in err
    assert "ValueError: cannot process f06.txt" in err
    assert strict.summary()["exit_code"] == parallel.EXIT_FAILED
    assert [b["batch"] for b in strict.summary()["failed_batches"]] == ["000001"]
    assert strict.calls("f06.txt") == 2

    # a rerun with the bug fixed: the given-up mini-batch gets new attempts, done ones do not run again
    done_before = set(strict.done_markers())
    [(code, _, err)] = strict.drive(procs, *options, "--error-threshold", "0")
    assert code == 0, err
    assert strict.done_items() == Counter(strict.items)
    assert strict.calls("f06.txt") == 3
    for batch in done_before:
        assert strict.calls(strict.done_markers()[batch]["items"][0]) == 1

    tolerant = Run(tmp_path, 20, "tolerant")
    [(code, _, err)] = tolerant.drive(
        procs,
        *options,
        "--error-threshold",
        "4",
        entry_args=["--raise-on", "f06.txt", "--short-on", "f15.txt"],
    )
    assert code == parallel.EXIT_FAILED  # 8 failed items > 4
    assert "8 failed items exceed the error threshold 4" in err

    tolerant = Run(tmp_path, 20, "tolerant-2")
    [(code, _, err)] = tolerant.drive(
        procs, *options, "--error-threshold", "4", entry_args=["--raise-on", "f06.txt"]
    )
    assert code == 0, err
    summary = tolerant.summary()
    assert summary["failed_items"] == ["f06.txt", "f07.txt", "f08.txt", "f09.txt"]
    assert summary["failed_batches"] == [
        {
            "batch": "000001",
            "items": ["f06.txt", "f07.txt", "f08.txt", "f09.txt"],
            "attempts": 2,
            "error": "ValueError: cannot process f06.txt",
        }
    ]
    assert (summary["done_items"], summary["complete"], summary["failed_attempts"]) == (16, True, 2)
    failure = json.loads((tolerant.state / "failed" / "000001.1.json").read_text())
    assert "raise ValueError" in failure["detail"]

    # a wrong number of results fails the mini-batch; -1 tolerates any number of failed items
    short = Run(tmp_path, 20, "short")
    [(code, _, err)] = short.drive(
        procs, *options, "--error-threshold", "-1", entry_args=["--short-on", "f15.txt"]
    )
    assert code == 0, err
    [failed] = short.summary()["failed_batches"]
    assert failed["batch"] == "000004"  # sub/f05.txt, sub/f10.txt, sub/f15.txt, sub/f20.txt
    assert failed["error"] == "ValueError: run() returned 3 results for 4 items"


def test_rerun_after_sigkill_runs_only_missing_batches(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    run = Run(tmp_path, 40)
    options = ("--mini-batch-size", "2", "--workers", "2")
    first = run.start(procs, *options, entry_args=["--sleep", "0.2"])
    deadline = time.monotonic() + 30
    while len(list((run.state / "done").glob("*.json"))) < 4:
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the supervisor and its workers at once
    first.wait()
    time.sleep(0.2)
    done_before = run.done_markers()
    assert 4 <= len(done_before) < 20
    assert not (run.state / "summary.json").exists()

    results = run.drive(procs, *options, processes=2)

    assert [code for code, _, _ in results] == [0, 0], results
    assert any(f"{len(done_before)} already done" in out for _, out, _ in results)
    run.assert_every_item_once()
    for batch, marker in run.done_markers().items():
        if batch in done_before:
            assert marker == done_before[batch]
            assert run.calls(marker["items"][0]) == 1
        else:
            assert run.calls(marker["items"][0]) in (1, 2)  # 2: it was running when the first run was killed
    summary = run.summary()
    assert (summary["done_items"], summary["failed_attempts"], summary["complete"]) == (40, 0, True)


def test_timeout_kills_the_worker(tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    run = Run(tmp_path, 8)
    options = ("--mini-batch-size", "2", "--workers", "2", "--timeout", "1", "--max-retries", "1")
    entry_args = ["--hang-on", "f02.txt:once", "--hang-on", "f06.txt"]  # in mini-batches 000000 and 000002
    started = time.monotonic()
    [(code, out, err)] = run.drive(procs, *options, "--error-threshold", "-1", entry_args=entry_args)

    assert code == 0, err
    assert time.monotonic() - started < 30  # nothing waited for the 60 s sleeps
    summary = run.summary()
    assert summary["failed_items"] == ["f06.txt", "f07.txt"]
    assert {f["kind"] for f in summary["failures"]} == {"timeout"}
    assert [(f["batch"], f["attempt"]) for f in summary["failures"]] == [
        ("000000", 0),
        ("000002", 0),
        ("000002", 1),
    ]
    assert summary["failures"][0]["error"] == "run() exceeded the timeout of 1s; worker killed"
    assert run.done_markers()["000000"]["attempt"] == 1
    assert summary["done_items"] == 6
    assert "mini-batch 000002 attempt 2 failed: run() exceeded the timeout of 1s" in out


def test_arguments_environment_and_standalone_copy(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    run = Run(tmp_path, 3)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    # a copy of the module outside the package, under `python -I -S`: it needs nothing but the standard library
    shutil.copy(Path(parallel.__file__), tmp_path / "azbai_parallel.py")
    argv = run.argv("--mini-batch-size", "2", entry_args=["--tag", "hello world"])
    argv[1:3] = ["-I", "-S", str(tmp_path / "azbai_parallel.py")]
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60)

    assert proc.returncode == 0, proc.stderr
    [line] = {p.read_text() for p in (run.output / "init").iterdir()}
    assert line == f"init hello world argv0={RECORD} cwd={cwd} helper=helper-ok\n"
    assert run.done_items() == Counter(run.items)


def test_dataframe_results(tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    pytest.importorskip("pandas")
    run = Run(tmp_path, 5)
    [(code, _, err)] = run.drive(procs, "--mini-batch-size", "3", entry=DATA / "frame.py")

    assert code == 0, err
    assert run.done_markers()["000001"]["results"] == [
        {"name": "f04.txt", "size": len("frame f04.txt\n")},
        {"name": "f05.txt", "size": len("frame sub/f05.txt\n")},
    ]


def test_empty_input(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    out, err = io.StringIO(), io.StringIO()
    code = parallel.drive(
        RECORD, tmp_path / "in", tmp_path / "out", tmp_path / "state", stdout=out, stderr=err
    )

    assert code == 0, err.getvalue()
    assert "0 mini-batches of up to 1 (0 items)" in out.getvalue()
    summary = json.loads((tmp_path / "state" / "summary.json").read_text())
    assert (summary["batches"], summary["items"], summary["complete"]) == (0, 0, True)


@pytest.mark.parametrize(
    ("entry", "entry_args", "code", "message"),
    [
        ("missing.py", [], parallel.EXIT_USAGE, "entry script not found: {data}/missing.py"),
        (
            "no_run.py",
            [],
            parallel.EXIT_ENTRY,
            "the entry script {data}/no_run.py defines no run(mini_batch) function",
        ),
        ("record.py", ["--bogus"], parallel.EXIT_ENTRY, "init() failed: SystemExit: 2"),
    ],
)
def test_unusable_entry_script(
    tmp_path: Path,
    procs: list[subprocess.Popen[str]],
    entry: str,
    entry_args: list[str],
    code: int,
    message: str,
) -> None:
    run = Run(tmp_path, 3)
    [(status, _, err)] = run.drive(procs, "--workers", "2", entry=DATA / entry, entry_args=entry_args)

    assert status == code
    assert message.format(data=DATA) in err.splitlines()[-1]
    assert not (run.output / "items").exists()


def test_bad_arguments_and_changed_input(tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    run = Run(tmp_path, 3)
    [(code, _, err)] = run.drive(procs, "--mini-batch-size", "0", "--workers", "0")
    assert code == parallel.EXIT_USAGE
    assert "--mini-batch-size must be at least 1, not 0; --workers must be at least 1, not 0" in err

    [(code, _, err)] = run.drive(procs, "--mini-batch-size", "2")
    assert code == 0, err
    (run.input / "late.txt").write_text("frame late\n")
    [(code, _, err)] = run.drive(procs, "--mini-batch-size", "2")
    assert code == parallel.EXIT_USAGE
    assert "the input's files changed since" in err and "1 added, 0 removed, e.g. late.txt" in err
    [(code, _, err)] = run.drive(procs, "--mini-batch-size", "3")
    assert "was made with --mini-batch-size 2, not 3" in err


def test_sigterm_stops_workers_without_failing_the_batch(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    run = Run(tmp_path, 4)
    proc = run.start(procs, "--mini-batch-size", "2", "--workers", "2", entry_args=["--hang-on", "f01.txt"])
    deadline = time.monotonic() + 30
    while not (run.marks / "calls-f01.txt").exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)

    assert proc.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in err
    assert not list((run.state / "failed").iterdir())
    assert run.summary()["pending_batches"] >= 1


# --- the fork server ---------------------------------------------------------------------------------------------

FORKED = DATA / "forked.py"
WAITING = DATA / "waiting.py"
needs_fork = pytest.mark.skipif(not parallel._ForkServer.usable(), reason="no fork server on this platform")


def _pids(folder: Path) -> set[int]:
    return {int(p.name) for p in folder.iterdir()} if folder.exists() else set()


def _times(folder: Path) -> dict[int, float]:
    """The times (``time.time()``) that the processes of ``folder``'s file names wrote there."""
    return {int(p.name): float(p.read_text()) for p in folder.iterdir()}


def _env(**changes: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(changes)
    return env


@needs_fork
def test_workers_fork_from_a_parent_that_imported_the_entry_script(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    run = Run(tmp_path, 12)
    [(code, out, err)] = run.drive(procs, "--workers", "3", "--mini-batch-size", "2", entry=FORKED)

    assert code == 0, err
    # module-level code ran once, in the fork server, whose children the workers are; init() once per worker
    (server,) = _pids(run.output / "imported")
    assert f"workers fork from process {server}, which imported the entry script" in out
    inits = {int(p.name): p.read_text() for p in (run.output / "init").iterdir()}
    assert len(inits) == 3 and set(inits.values()) == {"init\n"}
    assert server not in inits
    for pid in inits:
        assert not parallel._pid_alive(pid)  # reaped, gone: nothing left behind
    # every process ran the exit function the module level registered, and none tore the imports down: the
    # step need not wait for that (torch: a third of a second)
    assert _pids(run.output / "exited") == {server, *inits}
    assert _pids(run.output / "torn-down") == set()
    # every item once, each by the worker whose pid its claim and done marker name
    assert run.done_items() == Counter(run.items)
    for name, marker in run.done_markers().items():
        claim = json.loads((run.state / "claims" / f"{name}.0").read_text())
        assert claim["pid"] == marker["pid"] and claim["pid"] in inits
        assert marker["results"] == [f"{Path(i).name}:{marker['pid']}" for i in marker["items"]]


def test_without_the_fork_server_each_worker_imports(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    run = Run(tmp_path, 6)
    [(code, out, err)] = run.drive(procs, "--workers", "2", entry=FORKED, env=_env(AZBAI_PARALLEL_FORK="0"))

    assert code == 0, err
    assert "fork" not in out
    assert _pids(run.output / "imported") == _pids(run.output / "init")
    assert len(_pids(run.output / "init")) == 2
    # a fresh interpreter exits as Python does
    assert _pids(run.output / "exited") == _pids(run.output / "torn-down") == _pids(run.output / "init")


@needs_fork
def test_an_import_failing_in_the_fork_server_falls_back_to_fresh_workers(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    run = Run(tmp_path, 4)
    once = tmp_path / "failed-once"
    [(code, out, err)] = run.drive(
        procs, "--workers", "2", entry=FORKED, env=_env(FORKED_FAIL_IMPORT=str(once))
    )

    assert code == 0, err
    assert once.exists()
    assert (
        "no fork server (the entry script does not import here: ImportError: this entry script fails to import "
        "the first time); workers start afresh" in out
    )
    assert _pids(run.output / "imported") == _pids(run.output / "init")  # each worker imported it itself
    assert run.done_items() == Counter(run.items)

    # an import that fails everywhere is the workers' to report, as without a fork server
    broken = Run(tmp_path, 2, name="broken")
    [(code, out, err)] = broken.drive(
        procs, "--workers", "2", entry=FORKED, env=_env(FORKED_FAIL_IMPORT="always")
    )
    assert code == parallel.EXIT_ENTRY
    assert err.splitlines()[-1] == (
        f"parallel: error: cannot load the entry script {FORKED}: ImportError: this entry script never imports"
    )


@needs_fork
def test_a_crash_and_a_timeout_in_forked_workers(tmp_path: Path, procs: list[subprocess.Popen[str]]) -> None:
    run = Run(tmp_path, 6)
    [(code, out, err)] = run.drive(
        procs,
        "--workers",
        "2",
        "--timeout",
        "1",
        entry_args=["--crash-on", "f02.txt", "--hang-on", "f04.txt:once"],
    )

    assert code == 0, err
    assert "workers fork from process" in out
    kinds = {(f["batch"], f["kind"]) for f in run.summary()["failures"]}
    assert kinds == {("000001", "crash"), ("000003", "timeout")}
    assert "mini-batch 000001 attempt 1 failed: the worker process exited with code 9 during run()" in out
    assert "mini-batch 000003 attempt 1 failed: run() exceeded the timeout of 1s; worker killed" in out
    run.assert_every_item_once()
    assert set(run.init_counts().values()) == {1}  # the replacements were forked and init() ran in each


@pytest.mark.parametrize("fork", ["1", "0"], ids=["forked", "fresh"])
def test_a_waiting_worker_leaves_as_soon_as_the_last_mini_batch_ends(
    tmp_path: Path, procs: list[subprocess.Popen[str]], fork: str
) -> None:
    # one mini-batch, two workers: one runs it, the other finds it claimed and waits. Looking again only after
    # its back-off (0.05, 0.1, 0.2, 0.4, then 0.5 s), the waiting one would see the step settled 0.25 s or more
    # after the mini-batch ended (run() returns 1 s after that worker began waiting); its supervisor wakes it
    run = Run(tmp_path, 1)
    [(code, out, err)] = run.drive(
        procs,
        "--workers",
        "2",
        entry=WAITING,
        entry_args=["--after", "1.0"],
        env=_env(AZBAI_PARALLEL_FORK=fork),
    )

    assert code == 0, err
    assert ("workers fork from process" in out) == (fork == "1" and parallel._ForkServer.usable())
    ((busy, ended),) = _times(run.output / "ended").items()
    left = _times(run.output / "left")
    (waiting,) = set(left) - {busy}
    assert 0 <= left[waiting] - ended < 0.2
    assert run.done_items() == Counter(run.items)


@needs_fork
def test_workers_go_on_afresh_when_the_fork_server_dies(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    run = Run(tmp_path, 8)
    proc = run.start(procs, "--workers", "2", entry_args=["--sleep", "0.5"])
    assert proc.stdout is not None
    line = ""
    while "workers fork from process" not in line:
        line = proc.stdout.readline()
        assert line, "the supervisor ended without a fork server"
    server = int(line.split("workers fork from process ")[1].split(",")[0])
    deadline = time.monotonic() + 30
    while not list((run.state / "done").glob("*.json")):  # forked workers at work
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(server, signal.SIGKILL)
    out, err = proc.communicate(timeout=60)

    assert proc.returncode == 0, err
    # its workers exited with it (their mini-batches are retried), and the next ones are fresh interpreters
    assert "the fork server exited; workers start afresh from now on" in out
    run.assert_every_item_once()
    assert run.summary()["retries"] >= 1


@needs_fork
def test_torch_in_a_forked_worker_computes_with_its_own_threads(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    pytest.importorskip("torch")
    run = Run(tmp_path, 4)
    [(code, out, err)] = run.drive(
        procs, "--workers", "2", entry=DATA / "torch_forked.py", entry_args=["--threads", "2"]
    )

    assert code == 0, err
    assert "workers fork from process" in out
    results = [r for marker in run.done_markers().values() for r in marker["results"]]
    assert sorted(results) == sorted(f"{Path(i).name}:2" for i in run.items)


PRELOADED = DATA / "preloaded.py"
needs_prestart = pytest.mark.skipif(
    not parallel._ForkServer.usable() or not hasattr(os, "pidfd_open"),
    reason="no fork server started ahead here",
)


def _warm_env(tmp_path: Path, **changes: str) -> dict[str, str]:
    return _env(PYTHONPATH=str(DATA / "lib"), HEAVY_MARKS=str(tmp_path / "heavy"), **changes)


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_what_an_entry_script_imports_from_outside_its_folder(tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text("")
    (tmp_path / "pkg").mkdir()
    entry = tmp_path / "entry.py"
    entry.write_text(
        "from __future__ import annotations\n"
        "import os, torch.nn\n"
        "from PIL import Image\n"
        "from . import sibling\n"
        "import helper\n"
        "from pkg import thing\n"
        "try:\n    import onnxruntime\nexcept ImportError:\n    onnxruntime = None\n"
        "if True:\n    import numpy as np\n"
        "def init():\n    import late\n"
    )
    assert parallel.preload_modules(entry) == ["os", "torch.nn", "PIL", "PIL.Image", "onnxruntime", "numpy"]
    entry.write_text("this is not Python (")
    assert parallel.preload_modules(entry) == []


@needs_prestart
def test_a_fork_server_started_ahead_of_the_step_is_adopted(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    run = Run(tmp_path, 8)
    env = _warm_env(tmp_path)
    warm = parallel.prestart(PRELOADED, env)
    assert warm is not None and warm.modules == ("os", "azbai_test_heavy")
    assert warm.listening()  # what the engine waits for before it names the socket to the step
    try:
        [(code, out, err)] = run.drive(
            procs,
            "--workers",
            "2",
            "--mini-batch-size",
            "2",
            entry=PRELOADED,
            env={**env, parallel.WARM_ENV: warm.address},
        )
    finally:
        warm.close()
    assert code == 0, err
    server = warm.proc.pid
    assert (
        f"workers fork from process {server}, started ahead of the step, which imported the entry script"
        in out
    )
    # the slow import ran once, ahead; the entry script's own code after the adoption, in the step's folder
    assert _pids(tmp_path / "heavy") == {server}
    assert _pids(run.output / "imported") == {server}
    assert (run.output / "imported" / str(server)).read_text() == f"{ROOT}\n"
    assert run.done_items() == Counter(run.items)
    workers = set()
    for marker in run.done_markers().values():
        assert marker["results"] == [f"{Path(i).name}:{marker['pid']}:{server}" for i in marker["items"]]
        workers.add(marker["pid"])
    assert 1 <= len(workers) <= 2 and server not in workers
    assert warm.proc.returncode is not None  # reaped by whoever started it


@needs_prestart
def test_a_fork_server_started_in_another_environment_is_not_used(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    run = Run(tmp_path, 4)
    warm = parallel.prestart(PRELOADED, _warm_env(tmp_path))
    assert warm is not None and warm.listening()
    try:
        # OMP_NUM_THREADS is read when OpenMP loads: a library imported without it would not honour it
        step_env = _warm_env(tmp_path, OMP_NUM_THREADS="3", **{parallel.WARM_ENV: warm.address})
        [(code, out, err)] = run.drive(procs, "--workers", "2", entry=PRELOADED, env=step_env)
    finally:
        warm.close()
    assert code == 0, err
    assert (
        "the fork server started ahead of the step cannot serve: it was started in another environment "
        "(OMP_NUM_THREADS differ); starting one" in out
    )
    (server,) = _pids(run.output / "imported")
    assert server != warm.proc.pid and f"workers fork from process {server}, which imported" in out
    assert _pids(tmp_path / "heavy") == {warm.proc.pid, server}
    assert run.done_items() == Counter(run.items)


@needs_prestart
def test_a_missing_fork_server_started_ahead_is_only_a_note(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    run = Run(tmp_path, 2)
    step_env = _warm_env(tmp_path, **{parallel.WARM_ENV: "azbai-warm-nobody-listens"})
    [(code, out, err)] = run.drive(procs, "--workers", "1", entry=PRELOADED, env=step_env)
    assert code == 0, err
    assert "no fork server started ahead of the step (Connection refused); starting one" in out
    assert run.done_items() == Counter(run.items)


def _end_with_their_engine(tmp_path: Path, body: str) -> None:
    """Run ``body`` in an engine process, which prints the pids it started; kill it; they must end too."""
    script = f"import time\nfrom azbai.local import parallel\n{body}time.sleep(60)\n"
    engine = subprocess.Popen(
        [sys.executable, "-c", script], env=_warm_env(tmp_path), stdout=subprocess.PIPE, text=True
    )
    try:
        assert engine.stdout is not None
        pids = [int(pid) for pid in engine.stdout.readline().split()]
        assert pids and not any(_gone(pid) for pid in pids)
    finally:
        engine.kill()
        engine.wait()
    deadline = time.monotonic() + 5
    while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(pid) for pid in pids)


@needs_prestart
def test_a_fork_server_started_ahead_ends_with_the_process_that_started_it(tmp_path: Path) -> None:
    _end_with_their_engine(
        tmp_path,
        f"warm = parallel.prestart({str(PRELOADED)!r}, dict(__import__('os').environ))\n"
        "print(warm.proc.pid, flush=True)\n",
    )


@needs_prestart
def test_a_fork_server_started_ahead_is_found_among_its_jobs_leftovers(tmp_path: Path) -> None:
    # /proc/PID/environ shows the environment a process started with, not the step's it takes on adoption: the
    # marker of its job's work directory is what a later command finds it by, after a runner died
    from azbai.local.jobs import JobBook
    from azbai.local.runner import JOB_WORK_ENV, stop_leftovers
    from azbai.local.workspace import Workspace

    record = JobBook(Workspace(tmp_path / "ws").ensure()).create("exp", "job")
    other = parallel.prestart(PRELOADED, _warm_env(tmp_path, **{JOB_WORK_ENV: str(tmp_path / "elsewhere")}))
    warm = parallel.prestart(PRELOADED, _warm_env(tmp_path, **{JOB_WORK_ENV: str(record.work_dir)}))
    assert warm is not None and other is not None
    try:
        assert stop_leftovers(record, grace=2) == 1
        assert warm.proc.wait(5) is not None
        assert other.proc.poll() is None  # another job's is left alone
    finally:
        warm.close()
        other.close()


def _drive_adopting(
    run: Run, procs: list[subprocess.Popen[str]], warm: parallel.WarmServer, env: dict[str, str]
) -> str:
    assert warm.listening()
    try:
        [(code, out, err)] = run.drive(
            procs, "--workers", "2", entry=PRELOADED, env={**env, parallel.WARM_ENV: warm.address}
        )
    finally:
        warm.close()
    assert code == 0, err
    assert run.done_items() == Counter(run.items)
    return out


@needs_prestart
def test_a_pool_forks_every_runs_fork_server_from_one_import(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    pool = parallel.WarmPool()
    try:
        servers = []
        for index in range(3):
            # each run's step has its own job variables; what they share decides the zygote
            env = _warm_env(
                tmp_path, AZ_BATCHAI_JOB_NAME=f"job-{index}", AZBAI_JOB_WORK=str(tmp_path / str(index))
            )
            run = Run(tmp_path, 4, name=f"run{index}")
            warm = pool.prestart(PRELOADED, env)
            assert warm is not None and warm.modules == ("os", "azbai_test_heavy")
            out = _drive_adopting(run, procs, warm, env)
            assert warm.proc is not None
            server = warm.proc.pid
            assert f"workers fork from process {server}, started ahead of the step" in out
            assert _pids(run.output / "imported") == {server}  # the entry script itself: in the step
            assert warm.proc.poll() == 0
            servers.append(server)
        (zygote,) = pool.pids()
        # the slow library was imported once, by the zygote, for all three runs
        assert _pids(tmp_path / "heavy") == {zygote}
        assert len(set(servers)) == 3 and zygote not in servers
    finally:
        pool.close()
    assert _gone(zygote) and pool.pids() == []


@needs_prestart
def test_a_pool_keeps_a_zygote_per_shared_environment(
    tmp_path: Path, procs: list[subprocess.Popen[str]]
) -> None:
    pool = parallel.WarmPool()
    try:
        for threads in ("1", "3", "1"):
            env = _warm_env(tmp_path, OMP_NUM_THREADS=threads)
            warm = pool.prestart(PRELOADED, env)
            assert warm is not None
            out = _drive_adopting(Run(tmp_path, 2, name=f"omp{threads}-{len(pool.pids())}"), procs, warm, env)
            assert "started ahead of the step" in out
        assert len(pool.pids()) == 2
        assert _pids(tmp_path / "heavy") == set(pool.pids())
    finally:
        pool.close()


@needs_prestart
def test_a_pooled_fork_server_nobody_adopts_ends(tmp_path: Path) -> None:
    import psutil

    pool = parallel.WarmPool()
    try:
        early = pool.prestart(PRELOADED, _warm_env(tmp_path))
        assert early is not None
        early.close()  # before the zygote has even imported: its fork finds nobody waiting and exits
        listening = pool.prestart(PRELOADED, _warm_env(tmp_path))
        assert listening is not None and listening.listening()
        assert listening.proc is not None
        (zygote,) = pool.pids()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            alive = {c.pid for c in psutil.Process(zygote).children() if c.status() != psutil.STATUS_ZOMBIE}
            if alive == {listening.proc.pid}:
                break
            time.sleep(0.05)
        assert alive == {listening.proc.pid}
        listening.close()  # listening and never adopted: ended
        assert listening.proc.poll() == 0
    finally:
        pool.close()
    assert _gone(zygote)


@needs_prestart
def test_a_pools_processes_end_with_the_process_that_made_them(tmp_path: Path) -> None:
    # the zygote, and the fork server it forked that nobody adopted
    _end_with_their_engine(
        tmp_path,
        "pool = parallel.WarmPool()\n"
        f"warm = pool.prestart({str(PRELOADED)!r}, dict(__import__('os').environ))\n"
        "assert warm.listening()\n"
        "print(pool.pids()[0], warm.proc.pid, flush=True)\n",
    )


@needs_prestart
def test_a_pool_used_after_a_close_still_ends_its_zygote(tmp_path: Path) -> None:
    import gc

    pool = parallel.WarmPool()
    for _ in range(2):
        warm = pool.prestart(PRELOADED, _warm_env(tmp_path))
        assert warm is not None and warm.listening()
        warm.close()
        (zygote,) = pool.pids()
        pool.close()
        assert _gone(zygote) and pool.pids() == []
    warm = pool.prestart(PRELOADED, _warm_env(tmp_path))
    assert warm is not None and warm.listening()
    warm.close()
    (zygote,) = pool.pids()
    del pool, warm
    gc.collect()
    assert _gone(zygote)  # ended when the pool was collected


@needs_prestart
def test_a_pool_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(parallel.POOL_ENV, "0")
    pool = parallel.WarmPool()
    warm = pool.prestart(PRELOADED, _warm_env(tmp_path))
    try:
        assert warm is not None and isinstance(warm.proc, subprocess.Popen) and pool.pids() == []
    finally:
        assert warm is not None
        warm.close()
        pool.close()


def test_a_failure_recorded_after_a_look_still_counts(tmp_path: Path) -> None:
    # A worker looked at the state (mini-batch 1: attempt 0 failed, attempt 1 claimed); the holder of attempt 1
    # then recorded its failure and exited. Its claim is now a dead process's, which on its own reads as a crash
    # to retry, but two failed attempts give it up (--max-retries 1): no third attempt. Seen as "failed 3 times"
    # in test_error_threshold, about one run in fifty.
    state = tmp_path / "state"
    for folder in ("claims", "failed", "done"):
        (state / folder).mkdir(parents=True)
    tasks = parallel._Tasks([f"f{i}" for i in range(8)], 4)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    holder = {"pid": int(dead.stdout), "host": parallel._HOST, "boot": parallel._BOOT_ID, "supervisor": 1}
    for attempt in (0, 1):
        (state / "claims" / f"000001.{attempt}").write_text(json.dumps(holder))
    (state / "claims" / "000000.0").write_text(json.dumps(holder))
    (state / "done" / "000000.json").write_text("{}")
    failure = json.dumps({"batch": "000001", "error": "ValueError"})
    (state / "failed" / "000001.0.json").write_text(failure)
    view = parallel._View(str(state), tasks, frozenset(), max_tries=2)
    (state / "failed" / "000001.1.json").write_text(failure)  # after the look
    assert list(view.candidates()) == []
    # with a try left, the dead holder's attempt is retried as before
    assert list(parallel._View(str(state), tasks, frozenset(), max_tries=3).candidates()) == [(1, 2)]
