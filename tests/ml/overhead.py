"""The local Azure ML engine's overhead over ``azbai job create``: the same job, run side by side, medians.

    PYTHONPATH=. .venv/bin/python -m tests.ml.overhead [--runs 7]

Each round runs the MNIST recipe's job.json shape with a small stand-in script (``tests/data/jobs/report.py``),
once as ``azbai job create`` and once as ``azbai ml job create -f v2/job.yml`` (both to the job's end, in this
process, azure-ai-ml already imported), and prints ``name: value`` lines (seconds).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import azbai
from azbai.facade import secret_values
from azbai.local.azurite import DEV_ACCOUNT, Emulator
from azbai.local.service import create_job
from azbai.local.stores import open_store
from azbai.local.workspace import Workspace
from azbai.ml.loaders import load_job
from azbai.ml.registry import Registry
from azbai.ml.service import create_job as create_ml_job

HERE = Path(__file__).resolve().parent
SCRIPT = HERE.parent / "data" / "jobs" / "report.py"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        job = root / "job.json"
        recipe = json.loads((HERE.parents[1] / "recipes/cntk-mnist/job.json").read_text())
        recipe["properties"]["cntkSettings"]["pythonScriptFilePath"] = (
            "$AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/report.py"
        )
        job.write_text(json.dumps(recipe))
        azbai.migrate(job, root / "out", target="v2", name="overhead")
        workspaces = {"batchai": Workspace(root / "a"), "v2": Workspace(root / "b")}
        emulators = [Emulator(w.ensure()) for w in workspaces.values()]
        try:
            for emulator, workspace in zip(emulators, workspaces.values(), strict=True):
                emulator.ensure()
                open_store(workspace, DEV_ACCOUNT, share="scripts").upload_file(SCRIPT, "report.py")
                open_store(workspace, DEV_ACCOUNT, container="data").write_bytes("mnist_cntk/x.txt", b"1\n")
            registry = Registry(workspaces["v2"])
            for file in sorted((root / "out/v2").glob("*/*.yml")):
                (registry.create_datastore if file.parent.name == "datastores" else registry.create_compute)(
                    file
                )
            load_job(root / "out/v2/job.yml")  # the import of azure.ai.ml, once
            plan = azbai.load(job, name="overhead")
            times: dict[str, list[float]] = {"batchai": [], "v2": []}
            for index in range(args.runs):
                started = time.perf_counter()
                create_job(
                    workspaces["batchai"], plan, name=f"run-{index}", wait=True, secrets=secret_values(plan)
                )
                times["batchai"].append(time.perf_counter() - started)
                started = time.perf_counter()
                create_ml_job(workspaces["v2"], root / "out/v2/job.yml", wait=True)
                times["v2"].append(time.perf_counter() - started)
        finally:
            for emulator in emulators:
                emulator.stop()
    batchai, v2 = statistics.median(times["batchai"]), statistics.median(times["v2"])
    print(f"azbai_job_create_s: {batchai:.3f}")
    print(f"azbai_ml_job_create_s: {v2:.3f}")
    print(f"overhead_s: {v2 - batchai:.3f}")
    print(f"overhead_ratio: {v2 / batchai:.2f}")


if __name__ == "__main__":
    main()
