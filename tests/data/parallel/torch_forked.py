"""An entry script that imports torch at module level (no compute there), then computes in each worker.

``init()`` sets the worker's own intra-op thread count (``--threads``); ``run()`` multiplies two seeded matrices
with torch and checks the product against numpy's, in float64, and returns ``<name>:<threads>``.
"""

import argparse
import os

import numpy as np
import torch

THREADS = 1


def init():
    global THREADS
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    THREADS = parser.parse_known_args()[0].threads
    torch.set_num_threads(THREADS)


def run(mini_batch):
    results = []
    for path in mini_batch:
        seed = sum(os.path.basename(path).encode())
        rng = np.random.default_rng(seed)
        left, right = rng.standard_normal((256, 256)), rng.standard_normal((256, 256))
        got = torch.mm(torch.from_numpy(left).float(), torch.from_numpy(right).float()).double().numpy()
        error = float(np.abs(got - left @ right).max())
        if error > 1e-3:
            raise ValueError(f"torch.mm is off by {error}")
        results.append(f"{os.path.basename(path)}:{torch.get_num_threads()}")
    return results
