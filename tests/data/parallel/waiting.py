"""An entry script for timing a worker that waits for another one's mini-batch.

init() writes the time it ended to ``<output>/ready/<pid>``. run() waits for another worker to be ready, returns
``--after`` seconds after that worker's init() ended (by then that worker has found every mini-batch claimed and
is waiting), and writes the time it returned to ``<output>/ended/<pid>``. Every process writes the time its exit
functions ran to ``<output>/left/<pid>``.
"""

import argparse
import atexit
import os
import time

OUTPUT = os.environ["AZUREML_BI_OUTPUT_PATH"]
AFTER = 1.0


def _write(folder, value):
    os.makedirs(os.path.join(OUTPUT, folder), exist_ok=True)
    with open(os.path.join(OUTPUT, folder, str(os.getpid())), "w") as handle:
        handle.write(repr(value))


def init():
    global AFTER
    parser = argparse.ArgumentParser()
    parser.add_argument("--after", type=float, default=1.0)
    AFTER = parser.parse_known_args()[0].after
    atexit.register(lambda: _write("left", time.time()))
    _write("ready", time.time())


def _another_ready():
    folder = os.path.join(OUTPUT, "ready")
    deadline = time.time() + 30
    while time.time() < deadline:
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if name != str(os.getpid()) and os.path.getsize(path):
                with open(path) as handle:
                    return float(handle.read())
        time.sleep(0.01)
    raise RuntimeError("no other worker became ready")


def run(mini_batch):
    time.sleep(max(0.0, _another_ready() + AFTER - time.time()))
    _write("ended", time.time())
    return [os.path.basename(path) for path in mini_batch]
