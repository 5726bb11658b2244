"""Pipeline file → plan: each job step planned like a single job, then wired together.

Wiring table:

=================================================  =============================================================
pipeline file                                      plan
=================================================  =============================================================
``steps[].job``                                    a :class:`Step` whose job is the file's plan (same datastores)
``steps[].inputs[] {id, from: parameters.P}``      the input directory's data is the data-path parameter P
``steps[].inputs[] {id, from: D}``                 the input directory's data is pipeline data D
``steps[].outputs[] {id, to: D}``                  the output directory becomes pipeline data D (not uploaded)
``steps[].environment[]``                          job variables; ``{parameters.P}`` filled when a run starts
``steps[].parallel``                               a :class:`ParallelStep` from pipeline data to pipeline data
``parameters[]`` (``data_path``)                    a datastore path parameter (Azure ML ``DataPath``)
``trigger``                                        a datastore-triggered schedule on a blob container path
=================================================  =============================================================
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from azbai.convert.job import PlanOptions, build_plan
from azbai.convert.storage import WORKSPACE_DEFAULT_DATASTORE, sanitize, unique_name
from azbai.errors import SpecError
from azbai.plan.model import (
    Compute,
    CredentialKind,
    DataReference,
    Datastore,
    EnvironmentVariable,
    Job,
    MappingRow,
    Note,
    ParallelStep,
    ParameterKind,
    PipelineData,
    PipelineParameter,
    Plan,
    Source,
    Step,
    StoreKind,
    Trigger,
    VariableMapping,
    Volume,
)
from azbai.source.diagnostics import Diagnostic
from azbai.source.pipeline_spec import LoadedPipeline, StepSpec
from azbai.source.placeholders import StorageAccount
from azbai.source.reader import LoadedJob
from azbai.source.storage_names import ACCOUNT_PLACEHOLDER


@dataclasses.dataclass
class _Merger:
    """Datastores and data references of several step plans, deduplicated."""

    datastores: dict[tuple[StoreKind, str, str], Datastore] = dataclasses.field(default_factory=dict)
    references: dict[str, DataReference] = dataclasses.field(default_factory=dict)

    def datastore(self, store: Datastore) -> str:
        key = (store.kind, store.account_name, store.container_name)
        existing = self.datastores.get(key)
        if existing is not None:
            return existing.name
        name = unique_name(store.name, {d.name for d in self.datastores.values()})
        self.datastores[key] = dataclasses.replace(store, name=name)
        return name

    def reference(self, ref: DataReference, step: str) -> str:
        existing = self.references.get(ref.name)
        if existing == ref:
            return ref.name
        name = ref.name if existing is None else unique_name(f"{sanitize(step)}_{ref.name}", self.references)
        self.references[name] = dataclasses.replace(ref, name=name)
        return name


def build_pipeline_plan(
    loaded: LoadedPipeline,
    jobs: Mapping[str, LoadedJob],
    *,
    storage: StorageAccount | None = None,
    experiment: str | None = None,
) -> Plan:
    """The plan of a pipeline file; ``jobs`` holds each job step's loaded job.json, by step name."""
    spec = loaded.spec
    storage = storage or StorageAccount.resolve()
    merger = _Merger()
    steps: list[Step | ParallelStep] = []
    notes: list[Note] = []
    rows: list[MappingRow] = []
    variables: dict[str, VariableMapping] = {}
    pipeline_data: list[PipelineData] = []
    main: Plan | None = None

    parameters = []
    for p in spec.parameters:
        store = None
        if p.type == "data_path":
            store = merger.datastore(_blob_store(p.account_name, p.container_name or "", storage))
        parameters.append(PipelineParameter(p.name, ParameterKind(p.type), p.default, store))

    for step_spec in spec.steps:
        if step_spec.parallel is not None:
            par = step_spec.parallel
            steps.append(
                ParallelStep(
                    name=step_spec.name,
                    source_directory=par.source_directory,
                    entry_script=par.entry_script,
                    input=par.input,
                    output=par.output,
                    arguments=par.arguments,
                    mini_batch_size=par.mini_batch_size,
                    error_threshold=par.error_threshold,
                    process_count_per_node=par.process_count_per_node,
                    node_count=par.node_count,
                    max_retries=par.max_retries,
                    run_invocation_timeout=par.run_invocation_timeout,
                    pip_packages=par.pip_packages,
                    compute=step_spec.compute,
                    allow_reuse=step_spec.allow_reuse,
                )
            )
            pipeline_data.append(PipelineData(par.output, step_spec.name, WORKSPACE_DEFAULT_DATASTORE))
            rows.append(
                MappingRow(
                    loaded.path_of(par),
                    f"{par.entry_script} over '{par.input}'",
                    f"ParallelRunStep, mini_batch_size {par.mini_batch_size}, {par.process_count_per_node} "
                    f"process(es) per node on {par.node_count} node(s) → '{par.output}'",
                )
            )
            continue
        assert step_spec.job is not None
        sub = build_plan(
            jobs[step_spec.name],
            options=PlanOptions(name=step_spec.name, experiment=experiment or spec.experiment or spec.name),
        )
        main = main or sub
        step, produced = _wire(step_spec, sub, merger, loaded)
        container = sub.container
        if step_spec.pip_packages:
            added = tuple(p for p in step_spec.pip_packages if p not in container.pip_packages)
            container = dataclasses.replace(container, pip_packages=container.pip_packages + added)
        steps.append(
            dataclasses.replace(
                step,
                compute=step_spec.compute,
                allow_reuse=step_spec.allow_reuse,
                container=None if main is sub and container == sub.container else container,
            )
        )
        pipeline_data += [
            PipelineData(name, step_spec.name, WORKSPACE_DEFAULT_DATASTORE) for name in produced
        ]
        notes += [dataclasses.replace(n, field=f"{step_spec.job}: {n.field}") for n in sub.notes]
        notes += _parameters_in_commands(step_spec.job, sub.job_steps[0].job)
        rows += [dataclasses.replace(r, field=f"{step_spec.job}: {r.field}") for r in sub.mapping]
        for variable in sub.variables:
            variables.setdefault(variable.name, variable)

    if main is None:
        raise SpecError(
            str(loaded.source), [Diagnostic("steps", "no-job", "a pipeline needs at least one job step")]
        )
    if pipeline_data:
        merger.datastore(_workspace_default())
    trigger = None
    if spec.trigger is not None:
        t = spec.trigger
        store = merger.datastore(_blob_store(t.account_name, t.container_name, storage))
        trigger = Trigger(store, t.path.strip("/"), t.parameter, t.polling_interval_minutes, t.pattern, t.use)
    extra = tuple(
        Compute(c.name, c.vm_size.upper(), 0, c.vm_priority, c.min_nodes, c.max_nodes) for c in spec.computes
    )
    node_counts = [s.job.node_count for s in steps if isinstance(s, Step) and s.compute is None]
    node_counts += [s.node_count for s in steps if isinstance(s, ParallelStep) and s.compute is None]
    compute = dataclasses.replace(main.compute, max_nodes=max([main.compute.max_nodes, *node_counts]))
    plan = Plan(
        name=spec.name,
        experiment=experiment or spec.experiment or spec.name,
        source=Source(file=loaded.source.name, schema_version=None, toolkit="pipeline"),
        datastores=tuple(merger.datastores.values()),
        data_references=tuple(r for r in merger.references.values() if r.name in _referenced(steps)),
        container=main.container,
        compute=compute,
        steps=tuple(steps),
        variables=tuple(variables.values()),
        notes=tuple(notes),
        mapping=tuple(rows),
        parameters=tuple(parameters),
        pipeline_data=tuple(pipeline_data),
        extra_computes=extra,
        trigger=trigger,
    )
    return plan


def _wire(step_spec: StepSpec, sub: Plan, merger: _Merger, loaded: LoadedPipeline) -> tuple[Step, list[str]]:
    """One job step of the pipeline: its references merged, its bound directories rewired."""
    (step,) = sub.job_steps
    job = step.job
    store_names = {d.name: merger.datastore(d) for d in sub.datastores}
    ref_names: dict[str, str] = {}
    bound_outputs = {b.id: b.target for b in step_spec.outputs}
    bound_inputs = {b.id: b.source.removeprefix("parameters.") for b in step_spec.inputs}
    replaced = {
        o.data_reference for o in job.output_directories if o.id in bound_outputs and o.data_reference
    }
    replaced |= {i.data_reference for i in job.input_directories if i.id in bound_inputs and i.data_reference}
    for ref in sub.data_references:
        if ref.name in replaced:
            continue
        ref_names[ref.name] = merger.reference(
            dataclasses.replace(ref, datastore=store_names[ref.datastore]), step.name
        )
    _check_bound(
        step_spec, {d.id for d in job.input_directories}, {d.id for d in job.output_directories}, loaded
    )
    volumes = tuple(
        dataclasses.replace(v, data_reference=ref_names.get(v.data_reference or "", v.data_reference))
        for v in job.volumes
    )
    inputs = tuple(
        dataclasses.replace(
            d, data_reference=bound_inputs.get(d.id, ref_names.get(d.data_reference or "", d.data_reference))
        )
        for d in job.input_directories
    )
    outputs = tuple(
        dataclasses.replace(
            d, data_reference=bound_outputs.get(d.id, ref_names.get(d.data_reference or "", d.data_reference))
        )
        for d in job.output_directories
    )
    environment = job.environment_variables + tuple(
        EnvironmentVariable(v.name, v.value) for v in step_spec.environment
    )
    volumes = _unmount_rebound(job, volumes, set(bound_inputs), set(bound_outputs))
    job = dataclasses.replace(
        job,
        volumes=volumes,
        input_directories=inputs,
        output_directories=outputs,
        environment_variables=environment,
    )
    kept = (
        {v.data_reference for v in volumes}
        | {d.data_reference for d in inputs}
        | {d.data_reference for d in outputs}
    )
    used = [ref_names[n] for n in step.data_references if n in ref_names and ref_names[n] in kept]
    used += [*bound_inputs.values(), *bound_outputs.values()]
    return dataclasses.replace(step, job=job, data_references=tuple(dict.fromkeys(used))), list(
        bound_outputs.values()
    )


def _parameters_in_commands(job_file: str, job: Job) -> list[Note]:
    """``{parameters.NAME}`` is filled in environment variable values only: in a command line it reaches bash as
    written (a parameter's value never becomes shell syntax)."""
    texts = [("commandLine", g.command) for g in job.launch.groups]
    texts += [("jobPreparation.commandLine", job.job_preparation or "")]
    notes = []
    for field, text in texts:
        for name in dict.fromkeys(re.findall(r"\{parameters\.(\w+)\}", text)):
            notes.append(
                Note(
                    f"{job_file}: {field}",
                    "parameter-in-command",
                    f"{{parameters.{name}}} is not replaced in a command line (bash sees it as written): set an "
                    f'environment variable to it ({{"name": "{name.upper()}", "value": "{{parameters.{name}}}"}}) '
                    f"and use ${name.upper()}",
                )
            )
    return notes


def _referenced(steps: list[Step | ParallelStep]) -> set[str]:
    return {name for step in steps if isinstance(step, Step) for name in step.data_references}


def _unmount_rebound(
    job: Job, volumes: tuple[Volume, ...], inputs: set[str], outputs: set[str]
) -> tuple[Volume, ...]:
    """Volumes the job reached only through directories the pipeline rebinds need no mount in this step.

    The split step of a video pipeline mounted the media container for its input and output directories; once the
    pipeline feeds them from a parameter and to the next step, mounting (and, locally, mirroring) the whole container
    would only cost time. A volume any command, path or the stdout/stderr prefix still names stays mounted.
    """
    texts = [g.command for g in job.launch.groups] + [job.job_preparation or "", job.std_out_err_path_prefix]
    texts += [d.path for d in job.input_directories if d.id not in inputs and d.data_reference is None]
    texts += [
        d.path_prefix for d in job.output_directories if d.id not in outputs and d.data_reference is None
    ]
    rebound = [d.path for d in job.input_directories if d.id in inputs]
    rebound += [d.path_prefix for d in job.output_directories if d.id in outputs]

    def names(volume: Volume, text: str) -> bool:
        pattern = rf"\$\{{?{volume.root.value}\}}?/{re.escape(volume.relative_mount_path)}(?:/|$|\s|[\"';])"
        return re.search(pattern, text) is not None

    result = []
    for volume in volumes:
        rebound_only = any(names(volume, t) for t in rebound) and not any(names(volume, t) for t in texts)
        result.append(
            dataclasses.replace(volume, data_reference=None)
            if volume.data_reference and rebound_only
            else volume
        )
    return tuple(result)


def _check_bound(step_spec: StepSpec, inputs: set[str], outputs: set[str], loaded: LoadedPipeline) -> None:
    problems = []
    for binding in step_spec.inputs:
        if binding.id not in inputs:
            problems.append(
                Diagnostic(
                    loaded.path_of(binding) + ".id",
                    "unknown-name",
                    f"the job {step_spec.job} declares no input directory '{binding.id}'"
                    + (f" (it has {', '.join(sorted(inputs))})" if inputs else ""),
                )
            )
    for out in step_spec.outputs:
        if out.id not in outputs:
            problems.append(
                Diagnostic(
                    loaded.path_of(out) + ".id",
                    "unknown-name",
                    f"the job {step_spec.job} declares no output directory '{out.id}'"
                    + (f" (it has {', '.join(sorted(outputs))})" if outputs else ""),
                )
            )
    if problems:
        raise SpecError(str(loaded.source), problems)


def _blob_store(account: str | None, container: str, storage: StorageAccount) -> Datastore:
    name = account or ACCOUNT_PLACEHOLDER
    if name == ACCOUNT_PLACEHOLDER and storage.name:
        name = storage.name
    return Datastore(
        f"{sanitize(container)}_blob",
        StoreKind.BLOB_CONTAINER,
        name,
        container,
        CredentialKind.ACCOUNT_KEY_FROM_ENV,
        account_placeholder=name == ACCOUNT_PLACEHOLDER,
    )


def _workspace_default() -> Datastore:
    return Datastore(
        WORKSPACE_DEFAULT_DATASTORE,
        StoreKind.BLOB_CONTAINER,
        "(workspace default)",
        "(workspace default)",
        CredentialKind.WORKSPACE,
        workspace_default=True,
    )
