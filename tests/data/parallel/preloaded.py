"""An entry script with a slow library to import at its top level (``azbai_test_heavy``, on ``$PYTHONPATH``).

Its own module-level code records where it ran (``<output>/imported/<pid>``); run() returns ``name:pid:ppid``.
"""

import os

import azbai_test_heavy  # noqa: F401 - what a fork server started ahead of the step imports before the step

OUTPUT = os.environ["AZUREML_BI_OUTPUT_PATH"]
os.makedirs(os.path.join(OUTPUT, "imported"), exist_ok=True)
with open(os.path.join(OUTPUT, "imported", str(os.getpid())), "w") as handle:
    handle.write(f"{os.getcwd()}\n")


def run(mini_batch):
    return [f"{os.path.basename(path)}:{os.getpid()}:{os.getppid()}" for path in mini_batch]
