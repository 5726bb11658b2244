"""Plan of a pipeline file → ``v2/pipeline.yml``, ``v2/components/<step>.yml`` and ``v2/schedule.yml``.

=================================  ==================================================================================
plan                               CLI v2 YAML
=================================  ==================================================================================
job step                           a ``type: command`` component running the launcher (``snapshot/<step>/``), and
                                   its node: compute, resources, distribution, variables, data bound at the node
parallel step                      a ``type: parallel`` component: ``input_data``, ``mini_batch_size``,
                                   ``error_threshold``, ``max_concurrency_per_instance``, ``retry_settings``,
                                   ``task: run_function`` with the entry script (``init()`` / ``run(mini_batch)``)
pipeline data                      a component output, bound as ``${{parent.jobs.<producer>.outputs.<name>}}``
string parameter                   a literal pipeline input, ``${{parent.inputs.<name>}}`` → the launcher's ``--param``
data-path parameter                a ``uri_file`` / ``uri_folder`` pipeline input, ``mode: download``
trigger                            a recurrence schedule at the polling interval creating ``./pipeline.yml``
=================================  ==================================================================================
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from azbai.plan.model import ParallelStep, ParameterKind, Plan, Step
from azbai.targets.azureml_v2.render import (
    SCHEMA,
    Binding,
    StepIO,
    check_unique,
    datastore_uri,
    distribution,
    environment,
    ident,
    launcher_command,
    parameter_type,
    reference_binding,
    resources,
    user_variables,
    written_volumes,
)
from azbai.targets.azureml_v2.yaml_text import Comment


@dataclass
class Node:
    """A pipeline node and its component."""

    name: str
    component: dict[str, Any]
    node: dict[str, Any]
    segment_keys: dict[str, str] = field(default_factory=dict)
    vault: bool = False


def pipeline_nodes(plan: Plan) -> list[Node]:
    """Every step as a node of ``pipeline.yml`` with its ``components/<step>.yml``."""
    return [
        _parallel_node(plan, step) if isinstance(step, ParallelStep) else _job_node(plan, step)
        for step in plan.steps
    ]


def _producer(plan: Plan, name: str) -> str:
    return next(ident(d.producer) for d in plan.pipeline_data if d.name == name)


def _job_node(plan: Plan, step: Step) -> Node:
    job = step.job
    container = step.container or plan.container
    produced = {d.name for d in plan.pipeline_data if d.producer == step.name}
    data_names = {d.name for d in plan.pipeline_data}
    params = {p.name: p for p in plan.parameters}
    writable = written_volumes(job)
    by_reference = {v.data_reference: v.name for v in job.volumes if v.data_reference}
    io = StepIO()
    component_inputs: dict[str, Any] = {}
    component_outputs: dict[str, Any] = {}
    node_inputs: dict[str, Any] = {}
    node_outputs: dict[str, Any] = {}
    for name in step.data_references:
        key = ident(name)
        if name in produced:
            io.bindings.append(Binding(key, name, "outputs", {}))
            component_outputs[key] = {"type": "uri_folder"}
        elif name in data_names:
            io.bindings.append(Binding(key, name, "inputs", {}))
            component_inputs[key] = {"type": "uri_folder", "mode": "ro_mount"}
            node_inputs[key] = f"${{{{parent.jobs.{_producer(plan, name)}.outputs.{key}}}}}"
        elif name in params:
            io.bindings.append(Binding(key, name, "inputs", {}))
            component_inputs[key] = {"type": parameter_type(params[name].default), "mode": "download"}
            node_inputs[key] = f"${{{{parent.inputs.{key}}}}}"
        else:
            binding = reference_binding(
                plan, job, plan.data_reference(name), by_reference.get(name) in writable
            )
            io.bindings.append(binding)
            (component_inputs if binding.direction == "inputs" else component_outputs)[key] = {
                "type": "uri_folder"
            }
            (node_inputs if binding.direction == "inputs" else node_outputs)[key] = binding.spec
    for parameter in plan.parameters:
        used = any(f"{{parameters.{parameter.name}}}" in v.value for v in job.environment_variables)
        if parameter.kind is ParameterKind.STRING and used:
            io.params.append(parameter.name)
            component_inputs[ident(parameter.name)] = {"type": "string"}
            node_inputs[ident(parameter.name)] = f"${{{{parent.inputs.{ident(parameter.name)}}}}}"
    check_unique(io, step.name)
    component: dict[str, Any] = {
        "$schema": SCHEMA.format("commandComponent"),
        "type": "command",
        "name": ident(f"{plan.name}_{step.name}"),
        "version": "1",
        "display_name": step.name,
        "description": f"The Batch AI job {job.name} through the azbai compatibility launcher",
        "is_deterministic": step.allow_reuse,
        "code": f"../../snapshot/{step.name}",
        "command": launcher_command(plan, job, io),
        "environment": environment(container, secrets=bool(job.secrets)),
    }
    if component_inputs:
        component["inputs"] = component_inputs
    if component_outputs:
        component["outputs"] = component_outputs
    node: dict[str, Any] = {"type": "command", "component": f"./components/{ident(step.name)}.yml"}
    if step.compute and step.compute != plan.compute.name:
        node["compute"] = f"azureml:{step.compute}"
    node["resources"] = resources(job, container)
    dist = distribution(job)
    if dist:
        node["distribution"] = dist
    variables = user_variables(job)
    if variables:
        node["environment_variables"] = variables
    if node_inputs:
        node["inputs"] = node_inputs
    if node_outputs:
        node["outputs"] = node_outputs
    if job.max_wall_clock_seconds:
        node["limits"] = {"timeout": job.max_wall_clock_seconds}
    if job.secrets:
        node["identity"] = {"type": "managed"}
    keys = {
        f"jobs.{ident(step.name)}.outputs.{b.name}.path": b.spec["path"]
        for b in io.bindings
        if b.segment_path and b.direction == "outputs"
    }
    keys.update(
        {
            f"jobs.{ident(step.name)}.inputs.{b.name}.path": b.spec["path"]
            for b in io.bindings
            if b.segment_path and b.direction == "inputs"
        }
    )
    return Node(ident(step.name), component, node, keys, bool(job.secrets))


def _parallel_node(plan: Plan, step: ParallelStep) -> Node:
    params = {p.name for p in plan.parameters}
    arguments = []
    used = []
    for argument in step.arguments:
        if argument.startswith("{parameters.") and argument.endswith("}"):
            name = argument[len("{parameters.") : -1]
            used.append(name)
            arguments.append(f"${{{{inputs.{ident(name)}}}}}")
        else:
            arguments.append(shlex.quote(argument))
    source = ident(step.input)
    inputs: dict[str, Any] = {source: {"type": "uri_folder", "mode": "ro_mount"}}
    node_inputs: dict[str, Any] = {
        source: f"${{{{parent.jobs.{_producer(plan, step.input)}.outputs.{source}}}}}"
    }
    for name in dict.fromkeys(used):
        if name in params:
            inputs[ident(name)] = {"type": "string"}
            node_inputs[ident(name)] = f"${{{{parent.inputs.{ident(name)}}}}}"
    task: dict[str, Any] = {
        "type": "run_function",
        "code": f"../../snapshot/{step.name}",
        "entry_script": step.entry_script,
    }
    if arguments:
        task["program_arguments"] = " ".join(arguments)
    task["environment"] = environment(plan.container, step.pip_packages)
    component: dict[str, Any] = {
        "$schema": SCHEMA.format("parallelComponent"),
        "type": "parallel",
        "name": ident(f"{plan.name}_{step.name}"),
        "version": "1",
        "display_name": step.name,
        "description": f"{step.entry_script} (init() once per worker, run(mini_batch) per mini-batch) on every "
        f"file of {step.input}",
        "is_deterministic": step.allow_reuse,
        "inputs": inputs,
        "outputs": {ident(step.output): {"type": "uri_folder"}},
        "input_data": f"${{{{inputs.{source}}}}}",
        "mini_batch_size": str(step.mini_batch_size),
        "error_threshold": step.error_threshold,
        "max_concurrency_per_instance": step.process_count_per_node,
        "retry_settings": {"max_retries": step.max_retries, "timeout": step.run_invocation_timeout},
        "logging_level": "INFO",
        "resources": {"instance_count": step.node_count},
        "task": task,
    }
    node: dict[str, Any] = {"type": "parallel", "component": f"./components/{ident(step.name)}.yml"}
    if step.compute and step.compute != plan.compute.name:
        node["compute"] = f"azureml:{step.compute}"
    node["inputs"] = node_inputs
    return Node(ident(step.name), component, node)


def pipeline_document(plan: Plan, nodes: list[Node]) -> dict[str, Any]:
    """``v2/pipeline.yml``: the steps as nodes, data between them, parameters as pipeline inputs."""
    inputs: dict[str, Any] = {}
    for p in plan.parameters:
        if p.kind is ParameterKind.DATA_PATH:
            uri = datastore_uri(p.datastore or "workspaceblobstore", p.default)
            inputs[ident(p.name)] = {"type": parameter_type(p.default), "path": uri, "mode": "download"}
        else:
            inputs[ident(p.name)] = p.default
    doc: dict[str, Any] = {
        "$schema": SCHEMA.format("pipelineJob"),
        "type": "pipeline",
        "display_name": plan.name,
        "experiment_name": plan.experiment,
        "description": f"{plan.name} ({plan.source.file}), migrated by azbai",
        "settings": {"default_compute": f"azureml:{plan.compute.name}", "continue_on_step_failure": False},
    }
    if inputs:
        doc["inputs"] = inputs
    doc["jobs"] = {n.name: n.node for n in nodes}
    return doc


def schedule_document(plan: Plan) -> dict[str, Any] | None:
    """``v2/schedule.yml`` for a triggered pipeline: v2 has no datastore trigger, so a recurrence."""
    trigger = plan.trigger
    if trigger is None:
        return None
    where = f"{trigger.datastore}:{trigger.path_on_datastore or '/'}"
    return {
        Comment(
            f"Batch AI / azbai ran the pipeline for each new blob under {where} ({trigger.pattern})."
        ): None,
        Comment(
            "Azure ML v2 has no datastore trigger: this schedule polls, running pipeline.yml with its"
        ): None,
        Comment(
            f"default inputs every {trigger.polling_interval_minutes} minute(s) (unchanged steps are reused)."
        ): None,
        Comment("For a run per new blob use Event Grid (see MIGRATION.md)."): None,
        "$schema": SCHEMA.format("schedule"),
        "name": ident(f"{plan.name}_trigger"),
        "display_name": f"{plan.name} trigger",
        "description": f"polls {where} every {trigger.polling_interval_minutes} minute(s); was a datastore trigger",
        "trigger": {
            "type": "recurrence",
            "frequency": "minute",
            "interval": trigger.polling_interval_minutes,
            "time_zone": "UTC",
        },
        "create_job": "./pipeline.yml",
    }
