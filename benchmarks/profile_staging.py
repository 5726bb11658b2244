"""Where a staged file's time goes: azbai's verified transfer next to the plain SDK call, profiled.

Not a ``bench_*`` module (``make bench`` does not run it); run it on its own::

    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.profile_staging

Two views, printed as tables:

*One file at a time* (the main thread, cProfile): per-file milliseconds of azbai's ``BlobStore.download_file`` /
``upload_file`` and of the plain ``download_blob().readinto`` / ``upload_blob``, split into waiting on the socket
(Azurite's answer; the copy out of the socket is in it too), MD5, file system calls, and the rest (the SDK, requests
and urllib3 in Python, and azbai's own code, listed apart). cProfile slows Python code down, so the unprofiled
milliseconds per file of the same loop are printed too.

*The 200-file run* (all threads, ``perf record`` of the Python process and of Azurite, when ``perf`` works here):
the share of CPU samples in the interpreter, in libcrypto (MD5), in the kernel on the Python side (sockets, page
cache, ext4), and in Azurite; with the wall time and each process's CPU time per file.
"""

from __future__ import annotations

import cProfile
import functools
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from azbai.local.azurite import DEV_ACCOUNT, Emulator
from azbai.local.stores import BlobStore
from azbai.local.transfer import download, upload
from azbai.local.workspace import Workspace

FILES = 200
SIZES = {"1 MB": 1 << 20, "20 KB": 20 << 10}


def _category(filename: str, name: str) -> str:
    """What a profiled function's own time is: a built-in by its module, Python code by its file."""
    if filename == "~":  # built-ins, e.g. "<method 'recv_into' of '_socket.socket' objects>"
        if "_hashlib" in name:
            return "hashing (MD5; HMAC of the request signature)"
        if "_socket" in name or "_thread.lock" in name or "select" in name:
            return "waiting on the socket"
        if "posix." in name or "_io." in name or "io.open" in name:
            return "file system"
        return "sdk+http (python)"
    return "azbai's own python" if "/azbai/" in filename else "sdk+http (python)"


def _profile(loop: Callable[[], None]) -> dict[str, float]:
    profiler = cProfile.Profile()
    profiler.enable()
    loop()
    profiler.disable()
    split: dict[str, float] = {}
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
        key = _category(filename, name)
        split[key] = split.get(key, 0.0) + tottime
    return split


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _perf_split(path: Path) -> dict[str, float] | None:
    """Shares of samples by (command, library), folded into categories; ``None`` when perf cannot report.

    By command, not by pid: perf's "pid" is a thread's id, and each transfer thread has its own.
    """
    try:
        out = subprocess.run(
            ["perf", "report", "-i", str(path), "--sort", "comm,dso", "--stdio", "--percent-limit", "0.01"],
            capture_output=True, text=True, check=True, timeout=120,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    split: dict[str, float] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 3 or not parts[0].endswith("%"):
            continue
        share, comm, dso = float(parts[0].rstrip("%")), parts[1], " ".join(parts[2:])
        if not comm.startswith("python"):
            key = "azurite (node, and the kernel on its behalf)"
        elif "libcrypto" in dso:
            key = "python: MD5 (libcrypto)"
        elif "kernel" in dso:
            key = "python: kernel (sockets, page cache, ext4)"
        elif "libpython" in dso or "cpython" in dso:
            key = "python: interpreter (SDK, HTTP, azbai)"
        else:
            key = "python: libc and others"
        split[key] = split.get(key, 0.0) + share
    return split


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="azbai-profile-staging-"))
    emulator = Emulator(Workspace(tmp / "ws"))
    try:
        state = emulator.ensure()
        store = BlobStore.open(emulator.workspace, DEV_ACCOUNT, "profile")
        container = store._client  # the plain contestant gets the very same client and connection pool
        for label, size in SIZES.items():
            source = tmp / f"src-{size}"
            source.mkdir()
            for i in range(FILES):
                (source / f"f{i:05d}.bin").write_bytes(os.urandom(size))
            prefix = f"p{size}"
            upload(source, store, prefix)
            names = [f"{prefix}/f{i:05d}.bin" for i in range(FILES)]

            def plain_down(dest: Path, names: list[str] = names) -> None:
                for name in names:
                    (dest / name).parent.mkdir(parents=True, exist_ok=True)
                    with open(dest / name, "wb") as handle:
                        container.get_blob_client(name).download_blob().readinto(handle)

            def azbai_down(dest: Path, names: list[str] = names) -> None:
                for name in names:
                    store.download_file(name, dest / name)

            def plain_up(dest: Path, source: Path = source) -> None:
                for path in sorted(source.iterdir()):
                    with open(path, "rb") as handle:
                        container.upload_blob(f"{dest.name}/{path.name}", handle, overwrite=True)

            def azbai_up(dest: Path, source: Path = source) -> None:
                for path in sorted(source.iterdir()):
                    store.upload_file(path, f"{dest.name}/{path.name}")

            loops: dict[str, Callable[[Path], None]] = {"download, plain": plain_down, "download, azbai": azbai_down,
                     "upload, plain": plain_up, "upload, azbai": azbai_up}  # fmt: skip
            print(f"\n## One {label} file at a time ({FILES} files, ms per file)\n")
            timings: dict[str, list[float]] = {k: [] for k in loops}
            for round_ in range(3):
                for key, loop in loops.items():
                    dest = tmp / f"out-{round_}-{key.replace(', ', '-')}"
                    started = time.perf_counter()
                    loop(dest)
                    timings[key].append(time.perf_counter() - started)
                    shutil.rmtree(dest, ignore_errors=True)
            splits: dict[str, dict[str, float]] = {}
            for key, loop in loops.items():
                dest = tmp / f"prof-{key.replace(', ', '-')}"
                splits[key] = _profile(functools.partial(loop, dest))
                shutil.rmtree(dest, ignore_errors=True)
            categories = sorted({c for split in splits.values() for c in split})
            print("| | " + " | ".join(loops) + " |")
            print("|---" * (len(loops) + 1) + "|")
            print("| unprofiled (median of 3) | " + " | ".join(
                f"{statistics.median(timings[k]) / FILES * 1e3:.2f}" for k in loops) + " |")  # fmt: skip
            for category in categories:
                print(f"| {category} | " + " | ".join(
                    f"{splits[k].get(category, 0.0) / FILES * 1e3:.3f}" for k in loops) + " |")  # fmt: skip
            print("| total, profiled | " + " | ".join(
                f"{sum(splits[k].values()) / FILES * 1e3:.2f}" for k in loops) + " |")  # fmt: skip

        # The 200 x 1 MB download in parallel, as bench_staging runs it: azbai's download() at its defaults, and
        # the plain pool at 8 threads over the same client.
        names_1mb = [f"p{SIZES['1 MB']}/f{i:05d}.bin" for i in range(FILES)]

        def plain_pool(dest: Path) -> None:
            def one(name: str) -> None:
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                with open(dest / name, "wb") as handle:
                    container.get_blob_client(name).download_blob().readinto(handle)

            listed = list(container.list_blob_names(name_starts_with=f"p{SIZES['1 MB']}/"))
            assert sorted(listed) == names_1mb
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(one, listed))

        runs: dict[str, Callable[[Path], object]] = {"plain pool (8 threads)": plain_pool,
                "azbai download()": lambda dest: download(store, f"p{SIZES['1 MB']}", dest)}  # fmt: skip
        print(f"\n## The {FILES} x 1 MB download, all threads (perf, 4 rounds each)\n")
        for key, run in runs.items():
            run(tmp / "warm")
            shutil.rmtree(tmp / "warm")
            record = tmp / "perf.data"
            perf = None
            if shutil.which("perf"):
                perf = subprocess.Popen(
                    ["perf", "record", "-F", "999", "-o", str(record), "-p", f"{os.getpid()},{state.pid}"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                time.sleep(1.0)
            wall, py_cpu, node_cpu = time.perf_counter(), time.process_time(), _cpu_seconds(state.pid)
            for round_ in range(4):
                run(tmp / f"par-{round_}")
                shutil.rmtree(tmp / f"par-{round_}")
            wall, py_cpu = time.perf_counter() - wall, time.process_time() - py_cpu
            node_cpu = _cpu_seconds(state.pid) - node_cpu
            per_file = 4 * FILES / 1e3
            print(f"### {key}: wall {wall / per_file:.2f} ms/file, python CPU {py_cpu / per_file:.2f} ms/file, "
                  f"azurite CPU {node_cpu / per_file:.2f} ms/file")  # fmt: skip
            if perf is not None:
                perf.send_signal(signal.SIGINT)
                perf.wait(timeout=60)
                split = _perf_split(record)
                for category, share in sorted((split or {}).items(), key=lambda kv: -kv[1]):
                    print(f"- {category}: {share:.1f}% of samples")
                record.unlink(missing_ok=True)
    finally:
        emulator.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
