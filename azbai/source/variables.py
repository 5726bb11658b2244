"""The environment variables Batch AI defined for a job, and the ``$VAR`` references a config makes.

Batch AI expanded ``$VAR`` with shell semantics on the node, in the toolkit command lines and in the paths. azbai
checks each reference against what Batch AI would have defined. ``$oauthtoken`` (an NGC registry user name) is a
literal, which is why only shell-expanded fields are scanned.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

#: Variables Batch AI set for every job (catalogue §8.1), with what each holds.
BATCHAI_VARIABLES: dict[str, str] = {
    "AZ_BATCHAI_MOUNT_ROOT": "root of the cluster-level mounts",
    "AZ_BATCHAI_JOB_MOUNT_ROOT": "root of the job-level mounts",
    "AZ_BATCHAI_STDOUTERR_DIR": "the directory receiving the job's stdout and stderr",
    "AZ_BATCHAI_JOB_TEMP": "per-node temporary directory of the job",
    "AZ_BATCHAI_JOB_TEMP_DIR": "parent of all job temporary directories on the node",
    "AZ_BATCHAI_SHARED_JOB_TEMP": "temporary directory shared by all nodes of the job",
    "AZ_BATCHAI_MPI_HOST_FILE": "an OpenMPI host file listing the job's nodes",
    "AZ_BATCHAI_NUM_GPUS": "number of GPUs on the node",
    "AZ_BATCHAI_TASK_INDEX": "index of this process (TensorFlow: within its role; PyTorch: global rank)",
    "AZ_BATCHAI_PS_HOSTS": "TensorFlow parameter servers, host:port,…",
    "AZ_BATCHAI_WORKER_HOSTS": "TensorFlow workers, host:port,…",
    "AZ_BATCHAI_PYTORCH_INIT_METHOD": "URL for torch.distributed.init_process_group",
    "TF_CONFIG": "TensorFlow cluster specification (JSON)",
}

#: Variables that existed only in some API versions or were never reliably set.
UNRELIABLE_VARIABLES: dict[str, str] = {
    "AZ_BATCHAI_PYTORCH_BACKEND": "was never reliably set (the PyTorch recipe replaced it with the literal 'gloo')",
    "AZ_BATCHAI_NUM_GPUS_PER_NODE": "is the 2017 name of AZ_BATCHAI_NUM_GPUS",
}

#: Azure Batch (not Batch AI) variables that recipes used and that Azure ML compute also sets.
AZURE_BATCH_VARIABLES = frozenset(
    {
        "AZ_BATCH_HOST_LIST",
        "AZ_BATCH_NODE_LIST",
        "AZ_BATCH_MASTER_NODE",
        "AZ_BATCH_NODE_ID",
        "AZ_BATCH_TASK_ID",
    }
)

#: Ordinary variables any shell or image provides.
SHELL_VARIABLES = frozenset(
    {
        "HOME", "PATH", "PWD", "OLDPWD", "USER", "SHELL", "HOSTNAME", "LANG", "TMPDIR", "PYTHONPATH",
        "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES", "CUDA_HOME", "RANDOM", "OMPI_COMM_WORLD_RANK",
        "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_RANK", "PMI_SIZE",
    }
)  # fmt: skip

_REF_RE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)[^}]*\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")
_SINGLE_QUOTED_RE = re.compile(r"'[^']*'")


@dataclass(frozen=True)
class Reference:
    """One ``$NAME`` in a string."""

    name: str
    start: int


def references(text: str) -> Iterator[Reference]:
    """Every ``$NAME`` / ``${NAME}`` a shell would expand in ``text`` (single-quoted parts are literal)."""
    masked = _SINGLE_QUOTED_RE.sub(lambda m: " " * len(m.group()), text)
    for match in _REF_RE.finditer(masked):
        if match.start() > 0 and masked[match.start() - 1] == "\\":
            continue
        yield Reference(match["braced"] or match["plain"], match.start())


def input_variable(directory_id: str) -> str:
    """The variable naming an input directory."""
    return f"AZ_BATCHAI_INPUT_{directory_id}"


def output_variable(directory_id: str) -> str:
    """The variable naming an output directory."""
    return f"AZ_BATCHAI_OUTPUT_{directory_id}"
