"""``migrate_seconds``: wall time of ``python -m azbai migrate JOB.json`` per job, median over the whole corpus.

Each job is migrated by a fresh process, as a user runs it (interpreter start-up and imports included). The in-process
median (read, plan, render, write) is reported beside it.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import azbai
from azbai.errors import SpecError

#: the vendored Batch AI corpus (tests/data/corpus, MIT)
CORPUS = Path(__file__).resolve().parents[1] / "tests/data/corpus/batchai"


def _jobs() -> list[Path]:
    files = sorted(p for p in CORPUS.rglob("*.json") if "schemas" not in p.parts)
    return [p for p in files if not p.name.endswith((".cluster.json", ".other-properties.json"))]


def run() -> dict[str, float]:
    process_times, in_process_times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for index, job in enumerate(_jobs()):
            out = Path(tmp) / str(index)
            started = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-m", "azbai", "migrate", str(job), "-o", str(out)], capture_output=True
            )
            elapsed = time.perf_counter() - started
            if result.returncode == 0:
                process_times.append(elapsed)
                started = time.perf_counter()
                try:
                    azbai.migrate(job, Path(tmp) / f"{index}-in")
                except SpecError:
                    continue
                in_process_times.append(time.perf_counter() - started)
    return {
        "migrate_seconds": statistics.median(process_times),
        "migrate_seconds_max": max(process_times),
        "migrate_in_process_seconds": statistics.median(in_process_times),
        "migrate_jobs": len(process_times),
    }
