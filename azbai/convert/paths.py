"""Batch AI's expansion rules for the job's paths, applied once, at conversion, the same for every target.

Batch AI expanded ``stdOutErrPathPrefix``, ``outputDirectories[].pathPrefix`` and ``inputDirectories[].path`` on the
node with shell semantics: its own variables (``$AZ_BATCHAI_JOB_MOUNT_ROOT``…) and the job's
``environmentVariables`` (whose values it set as written). The Batch AI variables stay in the plan (each target
knows their value: the launcher on the node, the volume layout for datastore paths); the job's own variables are
replaced here, so ``$AZ_BATCHAI_JOB_MOUNT_ROOT/logs/$RUN_GROUP`` with ``RUN_GROUP=exp1`` lands in
``logs/exp1/…`` locally and in the generated ``path_on_datastore`` alike.

What stays unresolved is reported by ``validate`` (``unknown-variable``); a path that is absolute once expanded is a
``path-absolute`` warning: a local job writes it on this machine, outside the workspace.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from azbai.plan.model import Note

_VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")

#: the plan note codes of this module (``validate`` and ``job create`` report them)
PATH_NOTE_CODES = frozenset({"path-absolute"})


def expand_job_variables(text: str, variables: Mapping[str, str]) -> str:
    """``$NAME``/``${NAME}`` of the job's own ``variables`` replaced by their values (as written); every other
    ``$…`` (Batch AI's variables, unknown names) is left for the target to expand."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return variables[name] if name in variables else match.group(0)

    return _VAR_RE.sub(value, text)


def absolute_path_note(field: str, text: str) -> Note | None:
    """A ``path-absolute`` warning for a path that names the machine's file system rather than a mount."""
    if not text.startswith("/"):
        return None
    return Note(
        field,
        "path-absolute",
        f"{text!r} is an absolute path on the node, not under $AZ_BATCHAI_JOB_MOUNT_ROOT or $AZ_BATCHAI_MOUNT_ROOT: "
        "a local job writes there on this machine, outside its workspace, and nothing of it reaches a datastore",
    )
