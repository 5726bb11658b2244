"""``migrate_seconds``: wall time of ``python -m azbai migrate JOB.json --target all`` per job, median over the corpus.

Each job is migrated by a fresh process, as a user runs it (interpreter start-up and imports included), writing the
SDK v1 files and the ``v2/`` folder. The in-process median (read, plan, render, write) is reported beside it.

``migrate_v2_validate_seconds``: the median per job of the offline azure-ai-ml validation of the written ``v2/``
folder (``build_entities``: the loaders, ``validate_job``, ``_validate()``, the REST object, dump → load → equal),
in one process after azure-ai-ml's import, which is reported once as ``azure_ai_ml_import_seconds``.
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
    migrated: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, job in enumerate(_jobs()):
            out = Path(tmp) / str(index)
            started = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-m", "azbai", "migrate", str(job), "-o", str(out), "--target", "all"],
                capture_output=True,
            )
            elapsed = time.perf_counter() - started
            if result.returncode == 0:
                process_times.append(elapsed)
                migrated.append(out)
                started = time.perf_counter()
                try:
                    azbai.migrate(job, Path(tmp) / f"{index}-in", target="all")
                except SpecError:
                    continue
                in_process_times.append(time.perf_counter() - started)
        figures: dict[str, float] = {
            "migrate_seconds": statistics.median(process_times),
            "migrate_seconds_max": max(process_times),
            "migrate_in_process_seconds": statistics.median(in_process_times),
            "migrate_jobs": len(process_times),
        }
        figures.update(_validate(migrated))
    return figures


def _validate(folders: list[Path]) -> dict[str, float]:
    try:
        started = time.perf_counter()
        import azure.ai.ml  # noqa: F401
    except ImportError:
        return {}  # the azureml-v2 extra is not installed
    imported = time.perf_counter() - started
    from azbai.targets.azureml_v2 import build_entities

    times = []
    for folder in folders:
        started = time.perf_counter()
        build_entities(folder)
        times.append(time.perf_counter() - started)
    return {
        "migrate_v2_validate_seconds": statistics.median(times),
        "migrate_v2_validate_seconds_max": max(times),
        "azure_ai_ml_import_seconds": imported,
    }
