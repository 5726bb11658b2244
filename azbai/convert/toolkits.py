"""Toolkit settings → the processes Batch AI launched (catalogue §8.6), as :class:`~azbai.plan.model.Launch`.

One row per toolkit:

=====================  ================  ====================================  ==========================
toolkit                launch            processes                             stdout/stderr files
=====================  ================  ====================================  ==========================
cntkSettings           MPI               processCount (default nodeCount)      stdout.txt (interleaved)
chainerSettings        MPI               processCount (default nodeCount)      stdout.txt (interleaved)
horovodSettings        MPI               processCount (default nodeCount)      stdout.txt (interleaved)
customMpiSettings      MPI               processCount (default nodeCount)      stdout.txt (interleaved)
caffeSettings          MPI               processCount (default nodeCount)      stdout.txt (interleaved)
pyTorchSettings        per process       processCount (default nodeCount)      stdout-<rank>.txt
caffe2Settings         per process       nodeCount (one per node)              stdout-<i>.txt
tensorFlowSettings     parameter server  parameterServerCount + workerCount    stdout-ps-<i>, stdout-wk-<i>
customToolkitSettings  master only       1                                     stdout.txt
=====================  ================  ====================================  ==========================
"""

from __future__ import annotations

from azbai.plan.model import Distribution, Launch, LaunchMode, ProcessGroup
from azbai.source.model import (
    Caffe2Settings,
    CaffeSettings,
    ChainerSettings,
    CNTKsettings,
    CustomMpiSettings,
    CustomToolkitSettings,
    HorovodSettings,
    JobProperties,
    PyTorchSettings,
    TensorFlowSettings,
)

_SINGLE = ("stdout.txt", "stderr.txt")
_PER_RANK = ("stdout-{index}.txt", "stderr-{index}.txt")
_WORKER = ("stdout-wk-{index}.txt", "stderr-wk-{index}.txt")
_PS = ("stdout-ps-{index}.txt", "stderr-ps-{index}.txt")

#: toolkit JSON key → the short name Batch AI reported as ``toolType``
TOOL_TYPES = {
    "cntkSettings": "cntk",
    "pyTorchSettings": "pytorch",
    "tensorFlowSettings": "tensorflow",
    "caffeSettings": "caffe",
    "caffe2Settings": "caffe2",
    "chainerSettings": "chainer",
    "customToolkitSettings": "custom",
    "customMpiSettings": "mpi",
    "horovodSettings": "horovod",
}


def python_command(interpreter: str | None, script: str, args: str | None) -> str:
    """``python <script> <args>`` as Batch AI ran it (``pythonInterpreterPath`` replaces ``python``)."""
    return " ".join(part for part in (interpreter or "python", script, args or "") if part)


def launch_for(props: JobProperties) -> Launch:
    """The processes that ``props``' toolkit settings start."""
    toolkit = props.toolkit
    nodes = props.node_count or 1
    key = props.toolkit_key
    assert toolkit is not None and key is not None  # the reader rejects jobs without a toolkit
    tool = TOOL_TYPES[key]
    if isinstance(toolkit, TensorFlowSettings):
        return _tensorflow(toolkit, nodes)
    if isinstance(toolkit, PyTorchSettings):
        count = toolkit.process_count or nodes
        command = python_command(
            toolkit.python_interpreter_path, toolkit.python_script_file_path, toolkit.command_line_args
        )
        backend = toolkit.communication_backend.lower() if toolkit.communication_backend else None
        if count == 1:
            distribution = Distribution.NONE
        elif backend == "mpi":
            distribution = Distribution.MPI
        else:
            distribution = Distribution.PYTORCH
        groups = (ProcessGroup("rank", count, command, *_PER_RANK),)
        return Launch(tool, LaunchMode.PER_PROCESS, nodes, count, groups, distribution, backend)
    if isinstance(toolkit, Caffe2Settings):
        command = python_command(
            toolkit.python_interpreter_path, toolkit.python_script_file_path, toolkit.command_line_args
        )
        groups = (ProcessGroup("rank", nodes, command, *_PER_RANK),)
        return Launch(tool, LaunchMode.PER_PROCESS, nodes, nodes, groups, _mpi_if(nodes))
    if isinstance(toolkit, CustomToolkitSettings):
        groups = (ProcessGroup("master", 1, toolkit.command_line or "", *_SINGLE),)
        return Launch(tool, LaunchMode.MASTER_ONLY, nodes, 1, groups, _mpi_if(nodes))
    command = _mpi_command(toolkit)
    count = getattr(toolkit, "process_count", None) or nodes
    groups = (ProcessGroup("rank", count, command, *_SINGLE),)
    return Launch(tool, LaunchMode.MPI, nodes, count, groups, _mpi_if(count))


def _mpi_if(count: int) -> Distribution:
    return Distribution.MPI if count > 1 else Distribution.NONE


def _mpi_command(
    toolkit: CNTKsettings | CaffeSettings | ChainerSettings | CustomMpiSettings | HorovodSettings,
) -> str:
    if isinstance(toolkit, CustomMpiSettings):
        return toolkit.command_line
    if isinstance(toolkit, CNTKsettings | CaffeSettings) and toolkit.config_file_path is not None:
        if isinstance(toolkit, CNTKsettings):
            head = f"cntk configFile={toolkit.config_file_path}"
        else:
            head = f"caffe train --solver={toolkit.config_file_path}"
        return f"{head} {toolkit.command_line_args}" if toolkit.command_line_args else head
    script = toolkit.python_script_file_path
    assert script is not None  # the reader requires a script or a config file
    return python_command(toolkit.python_interpreter_path, script, toolkit.command_line_args)


def _tensorflow(toolkit: TensorFlowSettings, nodes: int) -> Launch:
    script, interpreter = toolkit.python_script_file_path, toolkit.python_interpreter_path
    distributed = nodes > 1 or toolkit.worker_count is not None or toolkit.parameter_server_count is not None
    if not distributed:
        command = python_command(interpreter, script, toolkit.master_command_line_args)
        single: tuple[ProcessGroup, ...] = (ProcessGroup("worker", 1, command, *_WORKER),)
        return Launch("tensorflow", LaunchMode.PARAMETER_SERVER, nodes, 1, single, Distribution.NONE)
    workers = toolkit.worker_count or nodes
    servers = toolkit.parameter_server_count or 1
    worker_args = toolkit.worker_command_line_args or toolkit.master_command_line_args
    groups = (
        ProcessGroup(
            "ps",
            servers,
            python_command(interpreter, script, toolkit.parameter_server_command_line_args),
            *_PS,
        ),
        ProcessGroup("worker", workers, python_command(interpreter, script, worker_args), *_WORKER),
    )
    return Launch(
        "tensorflow", LaunchMode.PARAMETER_SERVER, nodes, servers + workers, groups, Distribution.TENSORFLOW
    )
