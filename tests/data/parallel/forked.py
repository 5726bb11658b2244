"""An entry script that records where its module-level code ran: ``<output>/imported/<pid>``, and, for the same
processes, where the exit function it registers ran (``<output>/exited/<pid>``) and where the interpreter tore
its module down (``<output>/torn-down/<pid>``, written by a module-level object's ``__del__``).

With ``$FORKED_FAIL_IMPORT`` naming a marker file, the import fails once (the first process to import: the fork
server) and succeeds in later processes; naming ``always``, it always fails.
"""

import atexit
import os

OUTPUT = os.environ["AZUREML_BI_OUTPUT_PATH"]
_FAIL = os.environ.get("FORKED_FAIL_IMPORT", "")
if _FAIL == "always":
    raise ImportError("this entry script never imports")
if _FAIL:
    try:
        os.close(os.open(_FAIL, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        raise ImportError("this entry script fails to import the first time")
    except FileExistsError:
        pass
os.makedirs(os.path.join(OUTPUT, "imported"), exist_ok=True)
with open(os.path.join(OUTPUT, "imported", str(os.getpid())), "w") as handle:
    handle.write(f"{os.getppid()}\n")


def _record(folder):
    os.makedirs(os.path.join(OUTPUT, folder), exist_ok=True)
    with open(os.path.join(OUTPUT, folder, str(os.getpid())), "a") as handle:
        handle.write(f"{folder}\n")


class _Teardown:
    # what __del__ uses is held here: at the interpreter's teardown the module's globals may be gone already
    def __init__(self):
        self.os, self.output = os, OUTPUT

    def __del__(self):
        folder = self.os.path.join(self.output, "torn-down")
        self.os.makedirs(folder, exist_ok=True)
        self.os.close(
            self.os.open(self.os.path.join(folder, str(self.os.getpid())), self.os.O_CREAT | self.os.O_WRONLY)
        )


atexit.register(_record, "exited")
_teardown = _Teardown()


def init():
    os.makedirs(os.path.join(OUTPUT, "init"), exist_ok=True)
    with open(os.path.join(OUTPUT, "init", str(os.getpid())), "a") as handle:
        handle.write("init\n")


def run(mini_batch):
    return [f"{os.path.basename(path)}:{os.getpid()}" for path in mini_batch]
