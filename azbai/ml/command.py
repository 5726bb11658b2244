"""Run one command or parallel job (a job file's, or a pipeline node's) on the embedded default.

:func:`command_spec` and :func:`parallel_spec` read what azure-ai-ml loaded into a :class:`NodeSpec`: the command,
the code directory, inputs (literals, or data with a URI and a mode), outputs, resources, distribution and
limits. :meth:`Engine.execute` stages the data (:mod:`azbai.ml.data`), puts the paths and values into
``${{inputs.X}}``/``${{outputs.Y}}``, copies the code for each instance, starts the processes
(:mod:`azbai.ml.processes`) and stages out, also after a failure.

A parallel node runs :mod:`azbai.local.parallel` once per instance, with ``max_concurrency_per_instance`` workers
each, over the files of its ``input_data`` in mini-batches of ``mini_batch_size``; ``$AZUREML_BI_OUTPUT_PATH`` is
its first output.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azbai.errors import AzbaiError, MlError
from azbai.local.runner import LOCAL_RESOURCE_GROUP, LOCAL_SUBSCRIPTION, LOCAL_WORKSPACE
from azbai.local.workspace import Workspace
from azbai.ml import processes
from azbai.ml.data import Stager, finish_stage_out, parse_uri, write_stage_out
from azbai.ml.registry import DEFAULT_DATASTORE, Registry
from azbai.ml.runs import CANCELED, COMPLETED, FAILED, RUNNING, STAGE_DONE, RunRecord, now

log = logging.getLogger(__name__)

#: what ``{subscription}``, ``{resource_group}``, ``{workspace}`` become locally (as ``azbai job create`` has them)
LOCAL_ARM = {
    "subscription": LOCAL_SUBSCRIPTION,
    "resource_group": LOCAL_RESOURCE_GROUP,
    "workspace": LOCAL_WORKSPACE,
}
_BINDING = re.compile(r"\$\{\{\s*(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_OPTIONAL = re.compile(r"\$\[\[(.*?)\]\]", re.S)


@dataclass(frozen=True)
class DataInput:
    """A data input: its type, URI (or local path) and mode."""

    type: str
    uri: str
    mode: str | None


@dataclass(frozen=True)
class DataOutput:
    """An output: its URI (None: the workspace default location) and mode."""

    uri: str | None
    mode: str | None


@dataclass
class NodeSpec:
    """One command or parallel job, as run locally."""

    name: str
    type: str  # "command" or "parallel"
    command: str
    code: Path | None
    base_path: Path
    inputs: dict[str, DataInput | str] = field(default_factory=dict)
    outputs: dict[str, DataOutput] = field(default_factory=dict)
    environment_variables: dict[str, str] = field(default_factory=dict)
    instance_count: int = 1
    distribution: Any = None
    timeout: float | None = None
    compute: str | None = None
    parallel: dict[str, Any] = field(default_factory=dict)


def literal(value: Any) -> str:
    """A literal input as the command line sees it."""
    if isinstance(value, bool):
        return "True" if value else "False"
    return str(value)


def data_of(
    value: Any, declared_mode: str | None = None, declared_type: str | None = None
) -> DataInput | str:
    """An azure-ai-ml input value (an ``Input`` or a literal) as a :class:`DataInput` or a string."""
    path = getattr(value, "path", None)
    kind = getattr(value, "type", None) or declared_type
    if path is not None and kind in ("uri_folder", "uri_file", "mltable", "custom_model", "mlflow_model"):
        return DataInput(str(kind), str(path), getattr(value, "mode", None) or declared_mode)
    if path is not None:
        return literal(path)
    if hasattr(value, "default") and getattr(value, "default", None) is not None:
        return literal(value.default)
    return literal(value)


def command_spec(node: Any, name: str, inputs: Mapping[str, Any] | None = None) -> NodeSpec:
    """A command job (``load_job`` of a command file gives a ``Command`` node) or a pipeline's command node."""
    component = node.component
    declared = getattr(component, "inputs", {}) or {}
    given = {k: v._data for k, v in node.inputs.items()} if inputs is None else dict(inputs)
    spec = NodeSpec(
        name=name,
        type="command",
        command=str(getattr(component, "command", None) or node.command or ""),
        code=None,
        base_path=Path(component.base_path or node.base_path),
    )
    code = getattr(component, "code", None) or getattr(node, "code", None)
    spec.code = _code_dir(code, spec.base_path)
    spec.inputs = _inputs(given, declared)
    spec.outputs = _outputs(node, component)
    env = dict(getattr(component, "environment_variables", None) or {})
    env.update(getattr(node, "environment_variables", None) or {})
    spec.environment_variables = {k: str(v) for k, v in env.items()}
    resources = getattr(node, "resources", None)
    spec.instance_count = int(getattr(resources, "instance_count", None) or 1)
    spec.distribution = getattr(node, "distribution", None) or getattr(component, "distribution", None)
    limits = getattr(node, "limits", None)
    spec.timeout = float(limits.timeout) if limits is not None and limits.timeout else None
    spec.compute = getattr(node, "compute", None)
    return spec


def parallel_spec(node: Any, name: str, inputs: Mapping[str, Any]) -> NodeSpec:
    """A pipeline's parallel node: its task, input_data and mini-batch settings."""
    component = node.component
    task = node.task or component.task
    base = Path(component.base_path)
    spec = NodeSpec(name=name, type="parallel", command="", code=_code_dir(task.code, base), base_path=base)
    spec.inputs = _inputs(dict(inputs), getattr(component, "inputs", {}) or {})
    spec.outputs = _outputs(node, component)
    env = dict(getattr(task, "environment_variables", None) or {})
    spec.environment_variables = {k: str(v) for k, v in env.items()}
    resources = getattr(node, "resources", None) or getattr(component, "resources", None)
    spec.instance_count = int(getattr(resources, "instance_count", None) or 1)
    retry = node.retry_settings or component.retry_settings
    spec.parallel = {
        "entry_script": task.entry_script,
        "program_arguments": task.program_arguments or "",
        "input_data": node.input_data or component.input_data,
        "mini_batch_size": node.mini_batch_size or component.mini_batch_size or 1,
        "error_threshold": _first(node.error_threshold, component.error_threshold, -1),
        "max_retries": _first(getattr(retry, "max_retries", None), 3),
        "timeout": _first(getattr(retry, "timeout", None), 60),
        "workers": _first(node.max_concurrency_per_instance, component.max_concurrency_per_instance, 1),
    }
    spec.compute = getattr(node, "compute", None)
    return spec


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


def _code_dir(code: Any, base: Path) -> Path | None:
    if code is None:
        return None
    text = str(code)
    if text.startswith("azureml:") and not text.startswith("azureml:./"):
        raise MlError(f"code {text!r}: a registered code asset cannot be used locally; give a local folder")
    path = (base / text.removeprefix("azureml:")).resolve()
    if not path.is_dir():
        raise MlError(f"code folder {path} does not exist")
    return path


def _inputs(given: Mapping[str, Any], declared: Mapping[str, Any]) -> dict[str, DataInput | str]:
    result: dict[str, DataInput | str] = {}
    for key, value in given.items():
        spec = declared.get(key)
        if isinstance(value, (DataInput, str)) and not hasattr(value, "path"):
            result[key] = value
            continue
        result[key] = data_of(value, getattr(spec, "mode", None), getattr(spec, "type", None))
    return result


def _outputs(node: Any, component: Any) -> dict[str, DataOutput]:
    declared = getattr(component, "outputs", {}) or {}
    bound = {k: v._data for k, v in node.outputs.items()}
    result = {}
    for key in dict.fromkeys([*declared, *bound]):
        value = bound.get(key)
        mode = getattr(value, "mode", None) or getattr(declared.get(key), "mode", None)
        path = getattr(value, "path", None)
        result[key] = DataOutput(str(path) if path else None, mode)
    return result


class Engine:
    """Runs node specs in one local workspace."""

    def __init__(self, workspace: Workspace, env: Mapping[str, str] | None = None) -> None:
        self.workspace = workspace.ensure()
        self.registry = Registry(workspace)
        self.env = dict(os.environ if env is None else env)
        self._groups: dict[str, processes.ProcessGroup] = {}
        self._canceled = threading.Event()

    def check_compute(self, spec: NodeSpec, default: str | None = None) -> None:
        """The node's compute exists in the workspace and has enough instances."""
        name = spec.compute or default
        if not name:
            return
        compute = self.registry.compute(str(name))
        if compute.max_instances and spec.instance_count > compute.max_instances:
            raise MlError(
                f"{spec.name}: instance_count {spec.instance_count} exceeds compute {compute.name!r}'s "
                f"max_instances {compute.max_instances}"
            )

    def check_data(self, spec: NodeSpec) -> None:
        """Every datastore the node's inputs and outputs name exists (before anything runs)."""
        uris = [v.uri for v in spec.inputs.values() if isinstance(v, DataInput)]
        uris += [o.uri for o in spec.outputs.values() if o.uri]
        for uri in uris:
            location = parse_uri(self._fill(uri, "pending"), spec.base_path)
            if location.datastore is not None:
                self.registry.datastore(location.datastore)

    def cancel(self) -> None:
        """Stop what runs now (stage-out still runs)."""
        self._canceled.set()
        for group in list(self._groups.values()):
            group.cancel()

    def execute(self, spec: NodeSpec, record: RunRecord) -> int:
        """Run ``spec`` as ``record``: stage in, record the stage-out plan, run every process, stage out (always);
        returns the exit code (1 where the job succeeded but its stage-out failed).

        The plan is in ``stageout.json`` before a process of the job starts, so when this runner dies a later
        ``azbai ml job show`` stages out what the job wrote (:func:`~azbai.ml.data.finish_stage_out`)."""
        record.status, record.start_time = RUNNING, now()
        record.set_runner(os.getpid())
        record.save()
        stager = Stager(self.workspace, self.registry, record.path / "data", self.env)
        code = 1
        try:
            values = self._stage(spec, record, stager)
            write_stage_out(record, stager.plan())
            code = self._run(spec, record, values)
        except AzbaiError as exc:
            record.message = str(exc)
            log.error("%s: %s", spec.name, exc)
        finally:
            stager.unmount()  # the lazy mounts first, whatever way the job ended (its processes are gone)
            if record.stage_out is None:  # staging in failed: what was staged is staged out all the same
                write_stage_out(record, stager.plan())
            if code == processes.EXIT_TIMEOUT and not record.message:
                record.message = f"limits.timeout ({spec.timeout:g} s) exceeded"
            record.exit_code = code
            record.save()
            record = finish_stage_out(self.workspace, record)
            record.end_time = now()
            if self._canceled.is_set():
                record.status = CANCELED
            else:
                record.status = COMPLETED if code == 0 and not record.message else FAILED
            record.save()
        return code or (0 if record.stage_out == STAGE_DONE else 1)

    # -- data ------------------------------------------------------------------------------------------------------

    def _fill(self, text: str, run_name: str) -> str:
        for key, value in LOCAL_ARM.items():
            text = text.replace("{" + key + "}", value)
        text = text.replace("{run-id}", run_name)  # an SDK v1 output destination's placeholder
        return re.sub(r"\$\{\{\s*name\s*\}\}", run_name, text)

    def _stage(self, spec: NodeSpec, record: RunRecord, stager: Stager) -> dict[str, dict[str, str]]:
        values: dict[str, dict[str, str]] = {"inputs": {}, "outputs": {}}
        for key, value in spec.inputs.items():
            if isinstance(value, str):
                values["inputs"][key] = value
                record.inputs[key] = value
                continue
            location = parse_uri(self._fill(value.uri, record.name), spec.base_path)
            values["inputs"][key] = stager.stage_input(key, value.type, location, value.mode)
            record.inputs[key] = {"uri": location.uri, "mode": value.mode, "path": values["inputs"][key]}
        for key, output in spec.outputs.items():
            uri = output.uri or f"azureml://datastores/{DEFAULT_DATASTORE}/paths/azureml/{record.name}/{key}/"
            location = parse_uri(self._fill(uri, record.name), spec.base_path)
            values["outputs"][key] = stager.stage_output(key, location, output.mode)
            record.outputs[key] = {
                "uri": location.uri,
                "mode": output.mode or "rw_mount",
                "path": values["outputs"][key],
            }
        return values

    # -- processes -------------------------------------------------------------------------------------------------

    def _binder(self, spec: NodeSpec, values: dict[str, dict[str, str]]) -> Any:
        def bind(match: re.Match[str]) -> str:
            kind, key = match.group(1), match.group(2)
            if key not in values[kind]:
                raise MlError(
                    f"{spec.name}: the command uses ${{{{{kind}.{key}}}}} but the job has no such {kind[:-1]}"
                )
            return values[kind][key]

        return bind

    def _command(self, spec: NodeSpec, values: dict[str, dict[str, str]], record: RunRecord) -> str:
        bind = self._binder(spec, values)

        def optional(match: re.Match[str]) -> str:
            names = _BINDING.findall(match.group(1))
            return match.group(1) if all(k in values[kind] for kind, k in names) else ""

        if spec.type == "parallel":
            return self._parallel_command(spec, values, record, bind)
        text = _OPTIONAL.sub(optional, spec.command)
        return _BINDING.sub(bind, text)

    def _parallel_command(
        self, spec: NodeSpec, values: dict[str, dict[str, str]], record: RunRecord, bind: Any
    ) -> str:
        settings = spec.parallel
        match = _BINDING.fullmatch(str(settings["input_data"]).strip())
        if not match or match.group(1) != "inputs":
            raise MlError(
                f"{spec.name}: input_data must be ${{{{inputs.NAME}}}}, not {settings['input_data']!r}"
            )
        source = bind(match)
        if not spec.outputs:
            raise MlError(f"{spec.name}: a parallel job needs an output for its results")
        output = values["outputs"][next(iter(spec.outputs))]
        size = str(settings["mini_batch_size"]).strip()
        if not size.isdigit():
            raise MlError(f"{spec.name}: mini_batch_size {size!r}: only a file count runs locally")
        arguments = shlex.split(_BINDING.sub(bind, str(settings["program_arguments"])))
        entry = "$PWD/" + shlex.quote(str(settings["entry_script"]))
        argv = [
            sys.executable, "-m", "azbai.local.parallel",
            "--input", source, "--output", output, "--state", str(record.path / "parallel_state"),
            "--mini-batch-size", size, "--error-threshold", str(settings["error_threshold"]),
            "--max-retries", str(settings["max_retries"]), "--timeout", str(settings["timeout"]),
            "--workers", str(settings["workers"]),
        ]  # fmt: skip
        tail = " ".join(shlex.quote(a) for a in arguments)
        return (
            " ".join(shlex.quote(a) for a in argv)
            + f" --entry-script {entry}"
            + (f" -- {tail}" if tail else "")
        )

    def _run(self, spec: NodeSpec, record: RunRecord, values: dict[str, dict[str, str]]) -> int:
        command = self._command(spec, values, record)
        ranks = processes.plan_ranks(
            spec.instance_count, spec.distribution if spec.type == "command" else None
        )
        record.processes = len(ranks)
        workdirs = {}
        for node in sorted({r.node for r in ranks}):
            wd = record.path / "nodes" / str(node) / "wd"
            if spec.code is not None:
                shutil.copytree(spec.code, wd, symlinks=True, dirs_exist_ok=True)
            wd.mkdir(parents=True, exist_ok=True)
            workdirs[node] = wd
        env = dict(self.env)
        # the local venv stands for the environment's image: its python comes first
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env.update(
            AZUREML_RUN_ID=record.name,
            AZUREML_ARM_SUBSCRIPTION=LOCAL_ARM["subscription"],
            AZUREML_ARM_RESOURCEGROUP=LOCAL_ARM["resource_group"],
            AZUREML_ARM_WORKSPACE_NAME=LOCAL_ARM["workspace"],
            AZUREML_ARM_PROJECT_NAME=record.experiment,
            AZUREML_NODE_COUNT=str(spec.instance_count),
            AZBAI_WORKSPACE=str(self.workspace.root),
        )
        if record.parent:
            env["AZUREML_ROOT_RUN_ID"] = record.parent
        bind = self._binder(spec, values)
        env.update(
            {k: _BINDING.sub(bind, self._fill(v, record.name)) for k, v in spec.environment_variables.items()}
        )
        if spec.type == "parallel":
            env.setdefault("PYTHONPATH", "")
            env["PYTHONPATH"] = os.pathsep.join(p for p in (_azbai_root(), env["PYTHONPATH"]) if p)
        group = processes.ProcessGroup(command, ranks, workdirs, env, record.logs_dir, spec.timeout)
        self._groups[record.name] = group
        record.save()
        try:
            if self._canceled.is_set():
                return processes.EXIT_CANCELED
            return group.run()
        finally:
            self._groups.pop(record.name, None)


def _azbai_root() -> str:
    import azbai

    return str(Path(azbai.__file__).resolve().parent.parent)
