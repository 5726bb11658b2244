"""Plan of a pipeline file → ``pipeline.py``: several steps, data between them, parameters, a storage trigger.

=============================  ===============================================================================
plan                           Azure ML SDK v1
=============================  ===============================================================================
job step                       ``PythonScriptStep`` running the launcher (its snapshot: ``snapshot/<step>/``)
parallel step                  ``ParallelRunStep`` + ``ParallelRunConfig`` (its source directory copied)
pipeline data                  ``OutputFileDatasetConfig`` written by one step, ``.as_input()`` for the others
string parameter               ``PipelineParameter``
data-path parameter            ``PipelineParameter(DataPath(...))`` + ``DataPathComputeBinding(mode="download")``
trigger                        ``Schedule.create(datastore=…, path_on_datastore=…, data_path_parameter_name=…)``
                               on the published pipeline
extra compute                  a second ``AmlCompute`` (``computes[]`` of the pipeline file)
=============================  ===============================================================================
"""

from __future__ import annotations

import textwrap

from azbai.plan.model import (
    Compute,
    Container,
    DataMode,
    Distribution,
    ParallelStep,
    ParameterKind,
    Plan,
    Step,
)
from azbai.targets.azureml_v1 import codegen
from azbai.targets.snapshot import JOB_FILE, LAUNCHER_FILE, snapshot_dir


def render_pipeline_plan(plan: Plan) -> str:
    """The source of ``pipeline.py`` for a multi-step plan."""
    parts = [
        codegen.constants_section(plan),
        codegen.datastores_section(plan),
        _computes(plan),
        _environments(plan),
        _parameters(plan),
        _pipeline_data(plan),
        *[_step(plan, step) for step in plan.steps],
        _pipeline(plan),
        _schedule(plan),
        codegen.secrets_section(plan),
        _build(plan),
        _main(plan),
    ]
    return codegen.render_module(codegen.header_section(plan), parts)


def _computes(plan: Plan) -> str:
    lines = []
    for compute in (plan.compute, *plan.extra_computes):
        lines.append(f"{compute.name!r}: {_provisioning(compute)},")
    body = "\n".join(" " * 12 + line for line in lines)
    return f'''
    def compute_targets(ws: Workspace, dry_run: bool = False) -> dict:
        """The AmlCompute clusters of the pipeline (created when missing)."""
        configs = {{
{body}
        }}
        targets = {{}}
        for name, config in configs.items():
            if dry_run:
                targets[name] = _offline().compute_target(ws, name, config)
            elif name in ws.compute_targets:
                targets[name] = ws.compute_targets[name]
            else:
                targets[name] = ComputeTarget.create(ws, name, config)
                targets[name].wait_for_completion(show_output=True)
        return targets
    '''


def _provisioning(c: Compute) -> str:
    return (
        f"AmlCompute.provisioning_configuration(vm_size={c.vm_size!r}, vm_priority={c.vm_priority!r}, "
        f"min_nodes={c.min_nodes!r}, max_nodes={c.max_nodes!r}, "
        f"idle_seconds_before_scaledown={c.idle_seconds_before_scaledown!r})"
    )


def _container_of(plan: Plan, step: Step | ParallelStep) -> tuple[str, Container, tuple[str, ...]]:
    if isinstance(step, ParallelStep):
        return (
            f"{step.name}-env",
            plan.container,
            ("azureml-defaults", *plan.container.pip_packages, *step.pip_packages),
        )
    container = step.container or plan.container
    return f"{step.name}-env", container, ("azureml-defaults", *container.pip_packages)


def _environments(plan: Plan) -> str:
    rows = []
    registries = []
    own = conda = False
    for step in plan.steps:
        name, container, pip = _container_of(plan, step)
        if container.own_image:
            own = True
            needs = [p for p in pip if p != "azureml-defaults"]
            row = f"{step.name!r}: ({name!r}, {container.image!r}, None),"
            rows.append(row + (f"  # the image must have {', '.join(needs)}" if needs else ""))
        else:
            conda = True
            rows.append(f"{step.name!r}: ({name!r}, {container.image!r}, {list(pip)!r}),")
        if container.registry:
            password = container.registry_password_source is not None
            row = f"{step.name!r}: ({container.registry!r}, {container.registry_username!r}, {password!r}),"
            if container.registry_password_source == "key_vault":
                row += f"  # the password is in Key Vault ({container.registry_password_secret_url})"
            registries.append(row)
    body = "\n".join(" " * 8 + row for row in rows)
    own_image = list(codegen.OWN_IMAGE_LINES)
    conda_env = [
        'env.python.conda_dependencies = CondaDependencies.create(python_version="3.10", pip_packages=pip)'
    ]
    if own and conda:
        python = ["if pip is None:", *_indented(own_image), "else:", *_indented(conda_env)]
    else:
        python = own_image if own else conda_env
    lines = [
        "name, image, pip = ENVIRONMENTS[step]" if conda else "name, image, _ = ENVIRONMENTS[step]",
        "env = Environment(name)",
        "env.docker.base_image = image",
        *python,
    ]
    if registries:
        lines += [
            "if step in REGISTRIES:",
            "    address, username, password = REGISTRIES[step]",
            "    env.docker.base_image_registry.address = address",
            "    env.docker.base_image_registry.username = username",
            "    if password:  # given when the pipeline is built, never written here",
            '        env.docker.base_image_registry.password = os.environ.get("AZBAI_REGISTRY_PASSWORD")',
        ]
    lines.append("return env")
    what = "pip packages" + ("; None: the image's own Python, as it is" if own else "")
    function_body = textwrap.indent("\n".join(lines), " " * 8)
    registry_table = ""
    if registries:
        rows_text = "\n".join(" " * 8 + row for row in registries)
        registry_table = f"""
    #: the private registries of the steps' images: (server, username, whether a password is needed)
    REGISTRIES = {{
{rows_text}
    }}
"""
    return f'''
    #: each step's environment: (name, docker base image, {what})
    ENVIRONMENTS = {{
{body}
    }}
{registry_table}


    def environment(step: str) -> Environment:
        """The docker image and Python packages of a step."""
{function_body}
    '''


def _indented(lines: list[str]) -> list[str]:
    return [" " * 4 + line for line in lines]


def _parameters(plan: Plan) -> str:
    rows = []
    for p in plan.parameters:
        if p.kind is ParameterKind.DATA_PATH:
            rows.append(
                f"{p.name!r}: (PipelineParameter(name={p.name!r}, default_value=DataPath(datastore=stores[{p.datastore!r}], "
                f"path_on_datastore={p.default!r})), DataPathComputeBinding(mode='download')),"
            )
        else:
            rows.append(f"{p.name!r}: PipelineParameter(name={p.name!r}, default_value={p.default!r}),")
    body = "\n".join(" " * 12 + row for row in rows)
    return f'''
    def parameters(stores: dict) -> dict:
        """The values chosen when a run starts; a data path is downloaded for the step that reads it."""
        return {{
{body}
        }}
    '''


def _pipeline_data(plan: Plan) -> str:
    rows = [
        f"{d.name!r}: OutputFileDatasetConfig(name={d.name!r}),  # written by {d.producer}"
        for d in plan.pipeline_data
    ]
    body = "\n".join(" " * 12 + row for row in rows)
    return f'''
    def pipeline_data() -> dict:
        """What one step writes for later steps to read."""
        return {{
{body}
        }}
    '''


def _step(plan: Plan, step: Step | ParallelStep) -> str:
    return _parallel_step(plan, step) if isinstance(step, ParallelStep) else _job_step(plan, step)


def _job_step(plan: Plan, step: Step) -> str:
    produced = {d.name for d in plan.pipeline_data if d.producer == step.name}
    data_names = {d.name for d in plan.pipeline_data}
    params = {p.name: p for p in plan.parameters}
    lines = ["inputs, outputs, data = [], [], {}"]
    for name in step.data_references:
        if name in produced:
            lines += [f"data[{name!r}] = produced[{name!r}]", f"outputs.append(produced[{name!r}])"]
        elif name in data_names:
            lines += [
                f"data[{name!r}] = produced[{name!r}].as_input(name={name!r})",
                f"inputs.append(data[{name!r}])",
            ]
        elif name in params:
            lines += [f"data[{name!r}] = params[{name!r}]", f"inputs.append(params[{name!r}])"]
        else:
            ref = plan.data_reference(name)
            store, path = f"stores[{ref.datastore!r}]", codegen.path_expr(ref.path_on_datastore)
            if ref.mode is DataMode.UPLOAD:
                expr = (
                    f"OutputFileDatasetConfig(name={name!r}, destination=({store}, {path}))"
                    f".as_upload(overwrite={ref.overwrite!r})"
                )
                lines += [f"data[{name!r}] = {expr}", f"outputs.append(data[{name!r}])"]
            else:
                mode = (
                    "as_mount()"
                    if ref.mode is DataMode.MOUNT
                    else f"as_download(path_on_compute={ref.path_on_compute!r})"
                )
                lines += [
                    f"data[{name!r}] = DataReference({store}, data_reference_name={name!r}, path_on_datastore={path}).{mode}",
                    f"inputs.append(data[{name!r}])",
                ]
    string_params = [
        p.name for p in plan.parameters if p.kind is ParameterKind.STRING and _uses(step, p.name)
    ]
    launch = step.job.launch
    distribution = _distribution_expr(
        launch.distribution, launch.node_count, launch.process_count, launch.backend, launch.groups
    )
    ranks = '"--ranks", "external", ' if launch.distribution is not Distribution.NONE else ""
    body = "\n".join(" " * 8 + line for line in lines)
    step_arguments = "arguments"
    if string_params:
        pairs = "".join(f', "--param", {n!r}, params[{n!r}]' for n in string_params)
        step_arguments = f"[*arguments{pairs}]"
    compute = step.compute or plan.compute.name
    return f'''
    def step_{_ident(step.name)}(computes: dict, stores: dict, params: dict, produced: dict, segment: str) -> PythonScriptStep:
        """Step {step.name!r}: the Batch AI job {step.job.name!r} through the launcher ({launch.toolkit}, {launch.process_count} process(es) on {launch.node_count} node(s))."""
{body}
        src = ScriptRunConfig(
            source_directory=str(HERE / {snapshot_dir(plan, step)!r}),
            script={LAUNCHER_FILE!r},
            compute_target=computes[{compute!r}],
            environment=environment({step.name!r}),
            distributed_job_config={distribution},
            docker_runtime_config=DockerConfiguration(use_docker=True, shm_size={(step.container or plan.container).shm_size or "2g"!r}),
        )
        src.run_config.node_count = {launch.node_count!r}
        arguments = ["--job", {JOB_FILE!r}, "--segment", segment, {ranks}"--echo"]
        for name, value in data.items():
            arguments += ["--data", name, value]
        return PythonScriptStep(
            name={step.name!r},
            script_name={LAUNCHER_FILE!r},
            source_directory=str(HERE / {snapshot_dir(plan, step)!r}),
            arguments={step_arguments},
            inputs=inputs,
            outputs=outputs,
            compute_target=computes[{compute!r}],
            runconfig=src.run_config,
            allow_reuse={step.allow_reuse!r},
        )
    '''


def _uses(step: Step, parameter: str) -> bool:
    return any(f"{{parameters.{parameter}}}" in v.value for v in step.job.environment_variables)


def _distribution_expr(
    distribution: Distribution, nodes: int, processes: int, backend: str | None, groups: tuple
) -> str:  # type: ignore[type-arg, unused-ignore]
    if distribution is Distribution.MPI:
        return f"MpiConfiguration(process_count_per_node={-(-processes // nodes)!r}, node_count={nodes!r})"
    if distribution is Distribution.PYTORCH:
        name = "Gloo" if backend in (None, "gloo", "tcp") else "Nccl"
        return f"PyTorchConfiguration(communication_backend={name!r}, process_count={processes!r}, node_count={nodes!r})"
    if distribution is Distribution.TENSORFLOW:
        counts = {g.role: g.count for g in groups}
        return f"TensorflowConfiguration(worker_count={counts.get('worker', 1)!r}, parameter_server_count={counts.get('ps', 1)!r})"
    return "None"


def _parallel_step(plan: Plan, step: ParallelStep) -> str:
    arguments = []
    for argument in step.arguments:
        if argument.startswith("{parameters.") and argument.endswith("}"):
            arguments.append(f"params[{argument[len('{parameters.') : -1]!r}]")
        else:
            arguments.append(repr(argument))
    compute = step.compute or plan.compute.name
    return f'''
    def step_{_ident(step.name)}(computes: dict, stores: dict, params: dict, produced: dict, segment: str) -> ParallelRunStep:
        """Step {step.name!r}: {step.entry_script} on every file of {step.input!r}, in mini-batches of {step.mini_batch_size}."""
        config = ParallelRunConfig(
            source_directory=str(HERE / {snapshot_dir(plan, step)!r}),
            entry_script={step.entry_script!r},
            mini_batch_size={str(step.mini_batch_size)!r},
            error_threshold={step.error_threshold!r},
            output_action="summary_only",
            environment=environment({step.name!r}),
            compute_target=computes[{compute!r}],
            node_count={step.node_count!r},
            process_count_per_node={step.process_count_per_node!r},
            run_invocation_timeout={step.run_invocation_timeout!r},
            run_max_try={step.max_retries + 1!r},  # Azure ML counts tries, azbai retries
        )
        return ParallelRunStep(
            name={step.name!r},
            parallel_run_config=config,
            inputs=[produced[{step.input!r}].as_input(name={step.input!r})],
            output=produced[{step.output!r}],
            arguments=[{", ".join(arguments)}],
            allow_reuse={step.allow_reuse!r},
        )
    '''


def _pipeline(plan: Plan) -> str:
    calls = "\n".join(
        f"            step_{_ident(s.name)}(computes, stores, params, produced, segment)," for s in plan.steps
    )
    return f'''
    def pipeline(ws: Workspace, computes: dict, stores: dict, segment: str, dry_run: bool = False) -> Pipeline:
        """The pipeline: its steps in order, wired by the data they pass."""
        params = parameters(stores)
        produced = pipeline_data()
        steps = [
{calls}
        ]
        options = _offline().pipeline_options(ws) if dry_run else {{}}
        return Pipeline(ws, steps=steps, description={plan.name + " (migrated by azbai)"!r}, **options)
    '''


def _schedule(plan: Plan) -> str:
    trigger = plan.trigger
    if trigger is None:
        return '''
    def schedule(ws: Workspace, pipeline_id: str, stores: dict, dry_run: bool = False):
        """No trigger: runs are submitted by hand."""
        return None
    '''
    note = ""
    if trigger.pattern != "*":
        note += f"    # Azure ML fires for every blob under the path; azbai's local watcher also filters {trigger.pattern!r}\n"
    if trigger.use == "content":
        note += "    # Azure ML passes the trigger blob's own path: the first step must read the path written inside it\n"
    return (
        f'''
    def schedule(ws: Workspace, pipeline_id: str, stores: dict, dry_run: bool = False):
        """Run the published pipeline for each blob added or modified under {trigger.path_on_datastore!r}."""
'''
        + note
        + f"""        options = _offline().schedule_options(ws) if dry_run else {{}}
        return Schedule.create(
            ws,
            name={plan.name + "-trigger"!r},
            pipeline_id=pipeline_id,
            experiment_name=EXPERIMENT,
            datastore=stores[{trigger.datastore!r}],
            path_on_datastore={trigger.path_on_datastore or None!r},
            polling_interval={trigger.polling_interval_minutes!r},
            data_path_parameter_name={trigger.data_path_parameter!r},
            wait_for_provisioning=not dry_run,
            **options,
        )
    """
    )


def _build(plan: Plan) -> str:
    return '''
    def build(ws: Workspace, account_name: str, account_key: str | None, dry_run: bool = False,
              with_estimator: bool = False) -> dict:
        """Every Azure ML object of the migrated pipeline (a pipeline is published before its schedule exists)."""
        stores = datastores(ws, account_name, account_key, dry_run)
        computes = compute_targets(ws, dry_run)
        segment = SEGMENT.format(
            subscription=ws.subscription_id, resource_group=ws.resource_group, workspace=ws.name,
            experiment=EXPERIMENT, job=JOB_NAME, job_uuid="{run-id}",
        )
        built = pipeline(ws, computes, stores, segment, dry_run)
        objects = {"workspace": ws, "datastores": stores, "computes": computes, "pipeline": built, "step_segment": segment}
        if dry_run:
            objects["schedule"] = schedule(ws, _offline().OFFLINE_PIPELINE_ID, stores, dry_run=True)
        return objects


    def _offline():
        # azbai's stand-ins for the Azure ML service: only --dry-run uses them
        from azbai.targets.azureml_v1 import offline

        return offline
    '''


def _main(plan: Plan) -> str:
    publish = "publish the pipeline" + (
        " and create its trigger schedule" if plan.trigger is not None else ""
    )
    return codegen.render_main(
        modes=[("--submit", "submit one run to the workspace in --config"), ("--publish", publish)],
        flags=[],
        build_options="",
        submit="""
        if args.publish:
            published = objects["pipeline"].publish(name=JOB_NAME, description="migrated by azbai")
            print(f"published {published.id}: {published.endpoint}")
            created = schedule(ws, published.id, objects["datastores"])
            if created is not None:
                print(f"schedule {created.id} watches {created.datastore_name}/{created.path_on_datastore}")
            return 0
        run = Experiment(ws, EXPERIMENT).submit(objects["pipeline"])
        print(f"submitted {run.id}: {run.get_portal_url()}")
        return 0
        """,
    )


def _ident(name: str) -> str:
    import re

    return re.sub(r"\W+", "_", name).strip("_").lower() or "step"
