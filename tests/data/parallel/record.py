"""A ParallelRunStep entry script for the tests: one output file per item, init() counted per process.

Output: ``<$AZUREML_BI_OUTPUT_PATH>/items/<item name>`` holding ``<item name> <pid>``, and
``<output>/init/<pid>`` holding one line per init() call. Options (its own argparse, as Azure ML passes
``arguments``) make it misbehave on purpose.
"""

import argparse
import os
import sys
import time

import parallel_helper  # a sibling module: the entry script's folder must be on sys.path

OUTPUT = ""
ARGS = argparse.Namespace()


def init():
    global OUTPUT, ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--marks", help="folder of 'already happened' markers and per-batch call counts")
    parser.add_argument("--crash-on", help="os._exit(9) the first time this item is seen")
    parser.add_argument("--raise-on", help="raise every time this item is in the mini-batch")
    parser.add_argument("--short-on", help="return one result too few when this item is in the mini-batch")
    parser.add_argument("--hang-on", action="append", default=[], help="NAME or NAME:once: sleep 60 s")
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds per run() call")
    parser.add_argument("--tag", default="", help="echoed into init/<pid>")
    ARGS = parser.parse_args()
    OUTPUT = os.environ["AZUREML_BI_OUTPUT_PATH"]
    for sub in ("items", "init"):
        os.makedirs(os.path.join(OUTPUT, sub), exist_ok=True)
    with open(os.path.join(OUTPUT, "init", str(os.getpid())), "a") as handle:
        handle.write(
            f"init {ARGS.tag} argv0={sys.argv[0]} cwd={os.getcwd()} helper={parallel_helper.VALUE}\n"
        )


def _first_time(name):
    """True only the first time any process asks about ``name`` (an O_EXCL marker)."""
    try:
        os.close(os.open(os.path.join(ARGS.marks, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        return True
    except FileExistsError:
        return False


def run(mini_batch):
    names = [os.path.basename(path) for path in mini_batch]
    if ARGS.marks:
        with open(os.path.join(ARGS.marks, f"calls-{names[0]}"), "a") as handle:
            handle.write(f"{os.getpid()}\n")
    if ARGS.sleep:
        time.sleep(ARGS.sleep)
    for spec in ARGS.hang_on:
        name, _, once = spec.partition(":")
        if name in names and (not once or _first_time(f"hung-{name}")):
            time.sleep(60)
    if ARGS.raise_on in names:
        raise ValueError(f"cannot process {ARGS.raise_on}")
    results = []
    for path in mini_batch:
        name = os.path.basename(path)
        if name == ARGS.crash_on and _first_time(f"crashed-{name}"):
            os._exit(9)  # after writing the outputs of the items before it: the retry must overwrite them
        with open(path) as source:
            assert source.read().startswith("frame")
        with open(os.path.join(OUTPUT, "items", name), "w") as handle:
            handle.write(f"{name} {os.getpid()}\n")
        results.append(f"{name}:ok")
    if ARGS.short_on in names:
        results.pop()
    return results
