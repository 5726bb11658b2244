"""``import_seconds``: ``python -c "import azbai"`` in a fresh interpreter, median of 15, with the bare start-up.

``import_overhead_seconds`` is the difference of the two medians, measured side by side in the same run (target:
``import azbai`` under 0.3 s; it imports no Azure SDK).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

RUNS = 15


def _median(code: str) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run() -> dict[str, float]:
    bare, full = [], []
    for _ in range(3):  # interleaved, so that a noisy neighbour weighs on both alike
        bare.append(_median("pass"))
        full.append(_median("import azbai; azbai.load, azbai.Plan"))
    return {
        "import_seconds": statistics.median(full),
        "import_overhead_seconds": statistics.median(full) - statistics.median(bare),
    }
