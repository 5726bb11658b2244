"""Stands for a library that is slow to import (torch): records which process imported it, in ``$HEAVY_MARKS/<pid>``."""

import os

_marks = os.environ.get("HEAVY_MARKS")
if _marks:
    os.makedirs(_marks, exist_ok=True)
    with open(os.path.join(_marks, str(os.getpid())), "w") as handle:
        handle.write("imported\n")
