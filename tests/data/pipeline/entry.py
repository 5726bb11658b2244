"""A ParallelRunStep entry script: upper-cases each word file into AZUREML_BI_OUTPUT_PATH."""

import argparse
import os

args = None


def init():
    global args
    parser = argparse.ArgumentParser()
    parser.add_argument("--suffix", default="")
    args, _ = parser.parse_known_args()


def run(mini_batch):
    out = os.environ["AZUREML_BI_OUTPUT_PATH"]
    done = []
    for path in mini_batch:
        with open(path) as source, open(os.path.join(out, os.path.basename(path)), "w") as target:
            target.write(source.read().upper().rstrip("\n") + args.suffix + "\n")
        done.append(os.path.basename(path))
    return done
