"""``mnist_samples_per_s`` and ``mnist_overhead_ratio``: the MNIST recipe as a local job vs. its script run directly.

Same run, same files, alternating: (a) ``python ConvNet_MNIST.py DATA MODEL`` on local files, (b) ``azbai job
create --wait`` of the unchanged job.json, whose data come from the Azurite ``data`` container (mounted: mirrored in
and written back), whose script is on the ``scripts`` share, and whose model is uploaded to the ``logs`` share after
the run. The ratio is the median of (b)/(a) over the rounds. Epochs are shortened (``BENCH_MNIST_EPOCHS`` ×
``BENCH_MNIST_EPOCH_SIZE`` samples) so the benchmark takes minutes, not the recipe's quarter of an hour.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import azbai
from azbai.local.azurite import DEV_ACCOUNT, Emulator
from azbai.local.service import create_job, stream_file
from azbai.local.stores import open_store
from azbai.local.transfer import upload
from azbai.local.workspace import Workspace

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "cntk-mnist"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
EPOCHS = os.environ.get("BENCH_MNIST_EPOCHS", "3")
EPOCH_SIZE = os.environ.get("BENCH_MNIST_EPOCH_SIZE", "20000")
_RATE = re.compile(r"Finished Epoch\[(\d+) of \d+\].*\(\s*([\d.]+) samples/s\)")
_OF = re.compile(r"Finished Epoch\[\d+ of (\d+)\]")


def _same_work(log: str, who: str) -> None:
    """Both contestants must train the shortened epochs: a job that ran the recipe's 40 would make the ratio
    meaningless (a job sees Batch AI's environment only, so the epochs must be handed to it)."""
    totals = set(_OF.findall(log))
    if totals != {EPOCHS}:
        raise RuntimeError(f"the {who} run trained {sorted(totals) or 'no'} epochs, not {EPOCHS}")


def _rates(log: str) -> list[float]:
    # epoch 1 includes warm-up (allocation, first kernels); the steady rate is from epoch 2 on, as CNTK's log showed
    return [float(rate) for epoch, rate in _RATE.findall(log) if int(epoch) > 1]


def run() -> dict[str, float]:
    sys.path.insert(0, str(RECIPE))
    from prepare_data import prepare

    epochs = {"CONVNET_MNIST_EPOCHS": EPOCHS, "CONVNET_MNIST_EPOCH_SIZE": EPOCH_SIZE}
    env = {**os.environ, **epochs}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = root / "mnist_cntk"
        prepare(data)
        workspace = Workspace(root / "ws").ensure()
        Emulator(workspace).ensure()
        try:
            upload(RECIPE / "ConvNet_MNIST.py", open_store(workspace, DEV_ACCOUNT, share="scripts"), "cntk")
            upload(data, open_store(workspace, DEV_ACCOUNT, container="data"), "mnist_cntk")
            direct, job, ratios, rates = [], [], [], []
            old = dict(os.environ)
            os.environ.update(env)
            try:
                for index in range(ROUNDS):
                    started = time.perf_counter()
                    result = subprocess.run(
                        [sys.executable, str(RECIPE / "ConvNet_MNIST.py"), str(data), str(root / f"model{index}")],
                        capture_output=True, text=True, env=env, check=True,
                    )  # fmt: skip
                    direct.append(time.perf_counter() - started)
                    _same_work(result.stderr, "direct")
                    rates += _rates(result.stderr)
                    started = time.perf_counter()
                    record = create_job(  # the job sees Batch AI's environment only: the epochs are handed in
                        workspace,
                        azbai.load(RECIPE / "job.json"),
                        name=f"bench{index}",
                        wait=True,
                        env=epochs,
                    )
                    job.append(time.perf_counter() - started)
                    log = b"".join(stream_file(record, "stderr.txt", follow=False)).decode()
                    _same_work(log, "job")
                    rates += _rates(log)
                    ratios.append(job[-1] / direct[-1])
            finally:
                os.environ.clear()
                os.environ.update(old)
        finally:
            Emulator(workspace).stop()
    return {
        "mnist_samples_per_s": statistics.median(rates),
        "mnist_overhead_ratio": statistics.median(ratios),
        "mnist_direct_seconds": statistics.median(direct),
        "mnist_job_seconds": statistics.median(job),
    }
