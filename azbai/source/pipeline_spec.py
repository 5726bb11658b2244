"""azbai's pipeline file: Batch AI jobs (and parallel steps) wired into one ML pipeline.

Batch AI had no pipelines; its users chained jobs by hand (the style-transfer architecture: a Logic App, a container
creating one job per batch of frames). A pipeline file names the steps, what flows between them, its parameters and
an optional storage trigger::

    {
      "name": "style-transfer",
      "parameters": [
        {"name": "video", "type": "data_path", "accountName": "<AZURE_BATCHAI_STORAGE_ACCOUNT>",
         "containerName": "media", "default": "incoming/orangutan.mp4"},
        {"name": "style", "default": "19"}
      ],
      "steps": [
        {"name": "split", "job": "split.job.json",
         "inputs": [{"id": "VIDEO", "from": "parameters.video"}], "outputs": [{"id": "FRAMES", "to": "frames"}]},
        {"name": "style", "parallel": {"sourceDirectory": ".", "entryScript": "style_entry.py",
                                       "input": "frames", "output": "styled", "arguments": ["--style", "{parameters.style}"]}},
        {"name": "stitch", "job": "stitch.job.json", "inputs": [{"id": "FRAMES", "from": "styled"}]}
      ],
      "trigger": {"parameter": "video", "accountName": "<AZURE_BATCHAI_STORAGE_ACCOUNT>", "containerName": "media",
                  "path": "incoming", "pattern": "*.mp4", "pollingIntervalMinutes": 1}
    }

A step's ``inputs`` rebind input directories of its job to a parameter or to data an earlier step produced; its
``outputs`` turn output directories into data for later steps. The file is read with the same strictness as job
files: every problem, by JSON path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from azbai.errors import SpecError
from azbai.source.decode import UNPARSEABLE, decode_json
from azbai.source.diagnostics import Collector, Diagnostic, join_path
from azbai.source.fields import spec
from azbai.source.model import EnvName
from azbai.source.reader import read_text
from azbai.source.walker import Walker


@dataclass(frozen=True)
class ParameterSpec:
    """A pipeline parameter: a string, or a path in a blob container (``data_path``)."""

    name: EnvName = spec("name", required=True)
    default: str = spec("default", required=True)
    type: str = spec("type", default="string", enum=("string", "data_path"))
    account_name: str | None = spec("accountName")
    container_name: str | None = spec("containerName")


@dataclass(frozen=True)
class ComputeSpec:
    """An extra AmlCompute cluster (a CPU cluster for the steps that need no GPU)."""

    name: str = spec("name", required=True)
    vm_size: str = spec("vmSize", required=True)
    min_nodes: int = spec("minNodes", default=0, minimum=0)
    max_nodes: int = spec("maxNodes", default=1, minimum=1)
    vm_priority: str = spec("vmPriority", default="dedicated", enum=("dedicated", "lowpriority"))


@dataclass(frozen=True)
class InputBinding:
    """An input directory of the step's job, fed from ``parameters.NAME`` or from data an earlier step produced."""

    id: EnvName = spec("id", required=True)
    source: str = spec("from", required=True)


@dataclass(frozen=True)
class OutputBinding:
    """An output directory of the step's job that becomes the data named ``to`` for later steps."""

    id: EnvName = spec("id", required=True)
    target: EnvName = spec("to", required=True)


@dataclass(frozen=True)
class StepEnvironment:
    """A variable for the step's processes; ``{parameters.NAME}`` in the value is the parameter's value."""

    name: EnvName = spec("name", required=True)
    value: str = spec("value", required=True)


@dataclass(frozen=True)
class ParallelSpec:
    """An entry script applied to every file of ``input`` (Azure ML ``ParallelRunStep``)."""

    entry_script: str = spec("entryScript", required=True)
    input: str = spec("input", required=True)
    output: EnvName = spec("output", required=True)
    source_directory: str = spec("sourceDirectory", default=".")
    arguments: tuple[str, ...] = spec("arguments", factory=tuple)
    mini_batch_size: int = spec("miniBatchSize", default=1, minimum=1)
    error_threshold: int = spec("errorThreshold", default=0, minimum=-1)
    process_count_per_node: int = spec("processCountPerNode", default=1, minimum=1)
    node_count: int = spec("nodeCount", default=1, minimum=1)
    max_retries: int = spec("maxRetries", default=3, minimum=0)
    run_invocation_timeout: int = spec("runInvocationTimeout", default=600, minimum=1)
    pip_packages: tuple[str, ...] = spec("pipPackages", factory=tuple)


@dataclass(frozen=True)
class StepSpec:
    """One step: a Batch AI job file, or a parallel step."""

    name: str = spec("name", required=True)
    job: str | None = spec("job")
    parallel: ParallelSpec | None = spec("parallel")
    compute: str | None = spec("compute")
    inputs: tuple[InputBinding, ...] = spec("inputs", factory=tuple)
    outputs: tuple[OutputBinding, ...] = spec("outputs", factory=tuple)
    environment: tuple[StepEnvironment, ...] = spec("environment", factory=tuple)
    allow_reuse: bool = spec("allowReuse", default=True)
    #: packages the step's job needs on top of its image (Azure ML installs them; locally they must be installed)
    pip_packages: tuple[str, ...] = spec("pipPackages", factory=tuple)


@dataclass(frozen=True)
class TriggerSpec:
    """Run the pipeline for each new blob under ``path`` (passing its path as ``parameter``)."""

    parameter: str = spec("parameter", required=True)
    container_name: str = spec("containerName", required=True)
    path: str = spec("path", default="")
    account_name: str | None = spec("accountName")
    pattern: str = spec("pattern", default="*")
    polling_interval_minutes: int = spec("pollingIntervalMinutes", default=5, minimum=1)
    #: ``path``: the new blob's own path is the parameter; ``content``: the blob is a trigger file whose text names it
    use: str = spec("use", default="path", enum=("path", "content"))


@dataclass(frozen=True)
class PipelineSpec:
    """A pipeline file."""

    name: str = spec("name", required=True)
    steps: tuple[StepSpec, ...] = spec("steps", required=True)
    experiment: str | None = spec("experiment")
    description: str | None = spec("description")
    parameters: tuple[ParameterSpec, ...] = spec("parameters", factory=tuple)
    computes: tuple[ComputeSpec, ...] = spec("computes", factory=tuple)
    trigger: TriggerSpec | None = spec("trigger")


@dataclass(frozen=True)
class LoadedPipeline:
    """A pipeline file that read without errors."""

    source: Path
    spec: PipelineSpec
    diagnostics: tuple[Diagnostic, ...]
    walker: Walker

    def path_of(self, instance: object) -> str:
        """The JSON path of a spec object."""
        return self.walker.path_of(instance)


def is_pipeline_file(path: str | Path) -> bool:
    """Whether a JSON file is an azbai pipeline file (it has ``steps``) rather than a Batch AI job."""
    collector = Collector()
    try:
        value = decode_json(read_text(path), collector)
    except Exception:
        return False
    return isinstance(value, dict) and "steps" in value and "properties" not in value


def load_pipeline_spec(path: str | Path) -> LoadedPipeline:
    """Read and check a pipeline file (the jobs it names are read when the plan is built)."""
    collector = Collector()
    value = decode_json(read_text(path), collector)
    if value is UNPARSEABLE:
        raise SpecError(str(path), collector.items)
    walker = Walker(collector, None)
    built = walker.build(PipelineSpec, value, "")
    if built is None:
        raise SpecError(str(path), collector.items)
    _check(built, walker, collector)
    if collector.has_errors:
        raise SpecError(str(path), collector.items)
    return LoadedPipeline(Path(path), built, collector.items, walker)


def _check(pipeline: PipelineSpec, walker: Walker, collector: Collector) -> None:
    names: dict[str, str] = {}
    parameters = {p.name: p for p in pipeline.parameters}
    produced: dict[str, str] = {}
    computes = {c.name for c in pipeline.computes}
    if not pipeline.steps:
        collector.error("steps", "empty", "a pipeline needs at least one step")
    for step in pipeline.steps:
        path = walker.path_of(step)
        if step.name in names:
            collector.error(
                path + ".name", "duplicate", f"step name '{step.name}' is already used at {names[step.name]}"
            )
        names[step.name] = path + ".name"
        if step.job is not None and not step.job.strip():
            collector.error(path + ".job", "empty", "must name a Batch AI job file")
        elif (step.job is None) == (step.parallel is None):
            collector.error(
                path, "conflict", "a step has either 'job' (a Batch AI job file) or 'parallel', not both"
            )
        if step.compute is not None and step.compute not in computes:
            collector.error(
                path + ".compute", "unknown-name", f"no compute named '{step.compute}' in 'computes'"
            )
        sources = [(b.source, walker.path_of(b) + ".from") for b in step.inputs]
        if step.parallel is not None and step.parallel.input.startswith("parameters."):
            # its input is the files a step wrote: a data-path parameter reaches a parallel step through a job
            # step's input (the split step of the style-transfer pipeline)
            collector.error(
                walker.path_of(step.parallel) + ".input",
                "wrong-type",
                f"a parallel step runs over the files an earlier step writes, not over a parameter "
                f"('{step.parallel.input}'): bind the parameter to a job step's input and name that step's output",
            )
        elif step.parallel is not None:
            sources.append((step.parallel.input, walker.path_of(step.parallel) + ".input"))
            for index, argument in enumerate(step.parallel.arguments):
                _check_placeholders(
                    argument,
                    parameters,
                    join_path(walker.path_of(step.parallel) + ".arguments", index),
                    collector,
                )
        for variable in step.environment:
            _check_placeholders(variable.value, parameters, walker.path_of(variable) + ".value", collector)
        for source, where in sources:
            if source.startswith("parameters."):
                parameter = parameters.get(source.removeprefix("parameters."))
                if parameter is None:
                    collector.error(
                        where, "unknown-name", f"no parameter named '{source.removeprefix('parameters.')}'"
                    )
                elif parameter.type != "data_path":
                    collector.error(
                        where, "wrong-type", f"parameter '{parameter.name}' is a string, not a data_path"
                    )
            elif source not in produced:
                collector.error(
                    where,
                    "unknown-name",
                    f"no earlier step produces '{source}'"
                    + (f" (known: {', '.join(sorted(produced))})" if produced else ""),
                )
        targets = [(b.target, walker.path_of(b) + ".to") for b in step.outputs]
        if step.parallel is not None:
            targets.append((step.parallel.output, walker.path_of(step.parallel) + ".output"))
        for target, where in targets:
            if target in produced or target in parameters:
                collector.error(
                    where,
                    "duplicate",
                    f"'{target}' is already produced by step '{produced.get(target, 'parameters')}'",
                )
            produced[target] = step.name
    for parameter in pipeline.parameters:
        path = walker.path_of(parameter)
        if parameter.type == "data_path" and parameter.container_name is None:
            collector.error(
                path + ".containerName", "missing-key", "a data_path parameter names its blob container"
            )
    trigger = pipeline.trigger
    if trigger is not None:
        parameter = parameters.get(trigger.parameter)
        if parameter is None or parameter.type != "data_path":
            collector.error(
                walker.path_of(trigger) + ".parameter",
                "unknown-name",
                f"the trigger must name a data_path parameter, found '{trigger.parameter}'",
            )


def _check_placeholders(
    text: str, parameters: dict[str, ParameterSpec], path: str, collector: Collector
) -> None:
    import re

    for name in re.findall(r"\{parameters\.([^}]*)\}", text):
        if name not in parameters:
            collector.error(path, "unknown-name", f"no parameter named '{name}'")
        elif parameters[name].type != "string":
            collector.error(
                path, "wrong-type", f"parameter '{name}' is a data_path; bind it as an input instead"
            )
