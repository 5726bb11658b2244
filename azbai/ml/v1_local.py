"""``python pipeline.py --local``: the SDK v1 pipeline azbai generated, built offline, run on the embedded default.

The generated ``pipeline.py`` builds its objects (datastores, ``DataReference``s, ``OutputFileDatasetConfig``s,
``PythonScriptStep``s, ``ParallelRunStep``s, their run configurations) exactly as for ``--submit``, with a workspace
object that never contacts Azure (:func:`workspace`: the local subscription, resource group and workspace), and
hands them to :func:`main`. Each step then runs as Azure ML v1 runs it:

=====================================  ==========================================================================
the built object                       locally
=====================================  ==========================================================================
``DataReference(...).as_mount()``      read-write: a share's directory, a blob path's mirror written back
``.as_download()``                     a verified copy
``.as_upload()``, ``OutputFileDataset  an empty directory uploaded when the step ends (also after a failure) to its
Config(destination=...).as_upload()``  destination, ``{run-id}`` filled; without one ``workspaceblobstore``'s
                                       ``dataset/<run-id>/<name>/``, where a later step's ``.as_input()`` reads it
``$AZUREML_DATAREFERENCE_<name>``      set in every process, and replaced in the step's arguments, by the path
``PipelineParameter``                  its default value; a ``DataPath`` one downloaded (``DataPathComputeBinding``)
run_config distribution                ``MpiConfiguration``, ``PyTorchConfiguration``, ``TensorflowConfiguration``:
                                       node_count × processes, each with Azure ML's variables
``ParallelRunStep``                    :mod:`azbai.local.parallel` over its input, mini-batches, error threshold,
                                       ``run_max_try`` - 1 retries, ``process_count_per_node`` workers per node
=====================================  ==========================================================================

Steps run in the order the pipeline was built (which is their dependency order); the first failure stops the run.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from azbai.errors import AzbaiError, MlError
from azbai.local.workspace import Workspace
from azbai.ml.command import LOCAL_ARM, DataInput, DataOutput, Engine, NodeSpec
from azbai.ml.registry import DEFAULT_DATASTORE, DatastoreRecord, Registry, local_account
from azbai.ml.runs import COMPLETED, FAILED, RUNNING, RunBook, RunRecord, new_name, now

log = logging.getLogger(__name__)

_DATAREF = re.compile(r"\$AZUREML_DATAREFERENCE_([A-Za-z0-9_]+)")
#: ParallelRunStep's own arguments (flag and value), put in front of the user's by the SDK
_PRS_FLAGS = {
    "--client_sdk_version", "--scoring_module_name", "--mini_batch_size", "--error_threshold", "--output_action",
    "--logging_level", "--run_invocation_timeout", "--run_max_try", "--create_snapshot_at_runtime", "--output",
    "--process_count_per_node", "--append_row_file_name", "--partition_keys", "--allowed_failed_count",
    "--allowed_failed_percent", "--task_overhead_timeout", "--progress_update_timeout", "--first_task_creation_timeout",
}  # fmt: skip


def workspace() -> Any:
    """An SDK v1 ``Workspace`` that never contacts Azure, named like the local workspace's segment."""
    from azureml.core import Workspace as AmlWorkspace
    from azureml.core.authentication import ArmTokenAuthentication

    from azbai.targets.azureml_v1 import offline

    offline.activate()
    return AmlWorkspace(
        LOCAL_ARM["subscription"], LOCAL_ARM["resource_group"], LOCAL_ARM["workspace"],
        auth=ArmTokenAuthentication("offline", cloud="AzureCloud"), _location=offline.LOCATION,
        _disable_service_check=True, _workspace_id="22222222-2222-2222-2222-222222222222",
    )  # fmt: skip


def main(objects: dict[str, Any], local: Workspace | None = None) -> int:
    """Run the built pipeline; print one line per step and where its logs are; the exit code."""
    record = run(objects, local)
    book = RunBook(local or Workspace.resolve())
    for step, child in record.children.items():
        node = book.get(child)
        print(f"{step}: {node.status} (azbai ml job stream -n {child})")
    print(f"pipeline {record.name}: {record.status}" + (f": {record.message}" if record.message else ""))
    return 0 if record.status == COMPLETED else 1


def run(objects: dict[str, Any], local: Workspace | None = None) -> RunRecord:
    """Register the datastores locally, then run every step of ``objects["pipeline"]``; the pipeline's run record."""
    from azbai.local.azurite import Emulator

    local = (local or Workspace.resolve()).ensure()
    registry = Registry(local)
    for store in objects["datastores"].values():
        if store.name == DEFAULT_DATASTORE:
            continue  # the local workspace's own default, as in any workspace
        kind = "azure_file" if type(store).__name__ == "AzureFileDatastore" else "azure_blob"
        registry.register(
            DatastoreRecord(store.name, kind, local_account(store.account_name), store.container_name)
        )
    accounts = {d.account for d in registry.datastores() if d.type == "azure_blob"}
    Emulator(local).ensure(accounts=sorted(accounts))
    pipeline = objects["pipeline"]
    engine = Engine(local)
    book = RunBook(local)
    record = book.create(type="pipeline", display_name=pipeline._name or "pipeline", experiment="local-v1")
    record.status, record.start_time, record.pid = RUNNING, now(), os.getpid()
    record.save()
    produced: dict[str, str] = {}  # OutputFileDatasetConfig name -> where its step wrote it
    steps = list(pipeline._graph_builder._step2node)
    try:
        for position, step in enumerate(steps):
            name = new_name()
            spec = (
                _parallel(step, name, produced)
                if type(step).__name__ == "ParallelRunStep"
                else _script(step, name, produced)
            )
            child = book.create(name, type=spec.type, display_name=step.name, experiment=record.experiment,
                                parent=record.name)  # fmt: skip
            record.children[step.name] = child.name
            record.save()
            engine.execute(spec, child)
            child = RunRecord.load(child.path)
            for key, value in child.outputs.items():
                produced[key] = value["uri"]
            if child.status != COMPLETED:
                left = [s.name for s in steps[position + 1 :]]
                record.message = (
                    f"step {step.name!r} {child.status.lower()} (exit code {child.exit_code})"
                    + (f": {child.message}" if child.message else "")
                    + (f"; not started: {', '.join(left)}" if left else "")
                )
                break
    except AzbaiError as exc:
        record.message = str(exc)
    record.end_time = now()
    record.status = FAILED if record.message else COMPLETED
    record.save()
    return record


def _uri(datastore: str, path: str | None) -> str:
    return f"azureml://datastores/{datastore}/paths/{(path or '').strip('/')}"


def _output_uri(output: Any, run_name: str) -> str:
    destination = getattr(output, "destination", None)
    if destination:
        store, path = destination
        return _uri(store.name, str(path).replace("{run-id}", run_name))
    return _uri(DEFAULT_DATASTORE, f"dataset/{run_name}/{output.name}/")


def _data(step: Any, spec: NodeSpec, produced: dict[str, str]) -> dict[str, str]:
    """The step's inputs and outputs as the spec's; returns the placeholder each argument form becomes."""
    tokens: dict[str, str] = {}
    for item in [*step._inputs, *getattr(step, "_outputs", [])]:
        kind = type(item).__name__
        if kind == "DataReference":
            key = item.data_reference_name
            uri = _uri(item.datastore.name, item.path_on_datastore)
            if item.mode == "download":
                spec.inputs[key] = DataInput("uri_folder", uri, "download")
                tokens[f"$AZUREML_DATAREFERENCE_{key}"] = f"${{{{inputs.{key}}}}}"
            else:  # a v1 mount is read-write; as_upload is uploaded at the end
                spec.outputs[key] = DataOutput(uri, "upload" if item.mode == "upload" else "rw_mount")
                tokens[f"$AZUREML_DATAREFERENCE_{key}"] = f"${{{{outputs.{key}}}}}"
            spec.environment_variables[f"AZUREML_DATAREFERENCE_{key}"] = tokens[
                f"$AZUREML_DATAREFERENCE_{key}"
            ]
        elif kind == "OutputFileDatasetConfig":
            spec.outputs[item.name] = DataOutput(None, "upload" if item.mode == "upload" else "rw_mount")
            spec.parallel.setdefault("destinations", {})[item.name] = item
            tokens[f"DatasetOutputConfig:{item.name}"] = f"${{{{outputs.{item.name}}}}}"
        elif kind == "DatasetConsumptionConfig":
            source = item.dataset.name
            if source not in produced:
                raise MlError(
                    f"step {step.name!r}: input {item.name!r} reads {source!r}, which no earlier step wrote"
                )
            mode = "download" if item.mode == "download" else "ro_mount"
            spec.inputs[item.name] = DataInput("uri_folder", produced[source], mode)
            tokens[f"DatasetConsumptionConfig:{item.name}"] = f"${{{{inputs.{item.name}}}}}"
        elif kind == "_PipelineIO":  # a DataPath PipelineParameter with its compute binding
            datapath = item._datapath_param.default_value
            key = item._datapath_param.name
            path = datapath.path_on_datastore
            file_like = bool(Path(path).suffix)
            spec.inputs[key] = DataInput(
                "uri_file" if file_like else "uri_folder", _uri(datapath.datastore_name, path), "download"
            )
            tokens[f"<param:{key}>"] = f"${{{{inputs.{key}}}}}"
    return tokens


def _argument(value: Any, tokens: dict[str, str]) -> str:
    kind = type(value).__name__
    if kind == "PipelineParameter":
        return shlex.quote(str(value.default_value))
    if kind == "_PipelineIO":
        return tokens[f"<param:{value._datapath_param.name}>"]
    if kind == "DataReference":
        return tokens[f"$AZUREML_DATAREFERENCE_{value.data_reference_name}"]
    text = str(value)
    if text in tokens:
        return tokens[text]
    return _DATAREF.sub(lambda m: tokens.get(m.group(0), m.group(0)), shlex.quote(text))


def _fix_destinations(spec: NodeSpec, run_name: str) -> None:
    for key, output in spec.parallel.pop("destinations", {}).items():
        spec.outputs[key] = DataOutput(_output_uri(output, run_name), spec.outputs[key].mode)


def _distribution(runconfig: Any) -> Any:
    framework = (runconfig.framework or "").lower()
    communicator = (runconfig.communicator or "").lower()
    nodes = max(1, int(runconfig.node_count or 1))
    if framework == "pytorch":
        count = int(runconfig.pytorch.process_count or nodes)
        return SimpleNamespace(type="pytorch", process_count_per_instance=max(1, count // nodes))
    if framework == "tensorflow" or communicator == "parameterserver":
        tf = runconfig.tensorflow
        return SimpleNamespace(
            type="tensorflow", parameter_server_count=tf.parameter_server_count, worker_count=tf.worker_count
        )
    if communicator in ("intelmpi", "openmpi", "mpi"):
        return SimpleNamespace(
            type="mpi", process_count_per_instance=int(runconfig.mpi.process_count_per_node or 1)
        )
    return None


def _script(step: Any, name: str, produced: dict[str, str]) -> NodeSpec:
    source = Path(step._source_directory)
    spec = NodeSpec(name=step.name, type="command", command="", code=source, base_path=source)
    tokens = _data(step, spec, produced)
    _fix_destinations(spec, name)
    arguments = " ".join(_argument(a, tokens) for a in step._arguments)
    spec.command = f"python {shlex.quote(step._script_name)}" + (f" {arguments}" if arguments else "")
    runconfig = step._runconfig
    spec.instance_count = max(1, int(runconfig.node_count or 1))
    spec.distribution = _distribution(runconfig)
    spec.environment_variables.update({k: str(v) for k, v in (runconfig.environment_variables or {}).items()})
    return spec


def _parallel(step: Any, name: str, produced: dict[str, str]) -> NodeSpec:
    config = step._parallel_run_config
    source = Path(config.source_directory)
    spec = NodeSpec(name=step.name, type="parallel", command="", code=source, base_path=source)
    tokens = _data(step, spec, produced)
    output = step._output[0] if isinstance(step._output, list) else step._output
    spec.outputs = {output.name: DataOutput(_output_uri(output, name), "rw_mount")}
    spec.parallel.pop("destinations", None)
    user: list[str] = []
    arguments = list(step._arguments)
    index = 0
    while index < len(arguments):
        text = str(arguments[index])
        if text in _PRS_FLAGS or re.fullmatch(r"--input_(fds|ds)_\d+", text):
            index += 2
            continue
        user.append(_argument(arguments[index], tokens))
        index += 1
    (input_name,) = [k for k in spec.inputs]
    spec.parallel = {
        "entry_script": config.entry_script,
        "program_arguments": " ".join(user),
        "input_data": f"${{{{inputs.{input_name}}}}}",
        "mini_batch_size": config.mini_batch_size,
        "error_threshold": config.error_threshold,
        "max_retries": max(0, int(config.run_max_try) - 1),
        "timeout": config.run_invocation_timeout,
        "workers": config.process_count_per_node,
    }
    spec.instance_count = max(1, int(config.node_count or 1))
    return spec


__all__ = ["main", "run", "workspace"]
