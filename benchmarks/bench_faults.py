"""The fault-injection suite as figures: ``faults_survived: N/M`` and ``files_lost: K``.

Runs ``tests/faults`` (real Azurite, runners, launchers and job processes) under pytest with ``$AZBAI_FAULTS_REPORT``
set; each fault test appends whether it survived (its assertions held) and how many files written before the fault
were missing or different in storage afterwards. A fault that cannot be injected here (the tmpfs of the disk-full
test needs root) is counted in ``faults_skipped``, not in M.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run() -> dict[str, float | str]:
    with tempfile.TemporaryDirectory(prefix="azbai-faults-") as folder:
        report = Path(folder) / "faults.jsonl"
        env = {**os.environ, "AZBAI_FAULTS_REPORT": str(report)}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "faults")],
            cwd=ROOT,
            env=env,
            check=False,
            stdout=sys.stderr,
        )
        lines = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    counted = [line for line in lines if not line.get("skipped")]
    survived = sum(1 for line in counted if line["survived"])
    lost = sum(max(0, line["files_lost"]) for line in counted)
    unknown = sum(1 for line in counted if line["files_lost"] < 0)
    return {
        "faults_survived": f"{survived}/{len(counted)}",
        "files_lost": lost if not unknown else f"{lost} (+{unknown} fault(s) not checked)",
        "faults_skipped": len(lines) - len(counted),
    }
