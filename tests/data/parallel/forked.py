"""An entry script that records where its module-level code ran: ``<output>/imported/<pid>``.

With ``$FORKED_FAIL_IMPORT`` naming a marker file, the import fails once (the first process to import: the fork
server) and succeeds in later processes; naming ``always``, it always fails.
"""

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


def init():
    os.makedirs(os.path.join(OUTPUT, "init"), exist_ok=True)
    with open(os.path.join(OUTPUT, "init", str(os.getpid())), "a") as handle:
        handle.write("init\n")


def run(mini_batch):
    return [f"{os.path.basename(path)}:{os.getpid()}" for path in mini_batch]
