"""Plan → ``MIGRATION.md``: each Batch AI field, what it became in SDK v1 and in SDK v2, what Azure ML does differently."""

from __future__ import annotations

import re

from azbai.plan.model import Job, ParallelStep, Plan, Severity, Step
from azbai.targets.azureml_v1.codegen import SDK_V1_END_OF_SUPPORT
from azbai.targets.azureml_v2 import render as v2
from azbai.targets.snapshot import is_multi_step


def render_report(plan: Plan) -> str:
    """The Markdown text of MIGRATION.md."""
    compute, container = plan.compute, plan.container
    launch = plan.job_steps[0].job.launch
    out = [
        f"# Migration of the Batch AI job `{plan.name}`",
        "",
        f"Source: `{plan.source.file}` (schema {plan.source.schema_version or 'not declared'}, {plan.source.toolkit})"
        + (f", cluster `{plan.source.cluster_file}`" if plan.source.cluster_file else "")
        + ".",
        "",
        f"> **Azure ML SDK v1 reached end of support on {SDK_V1_END_OF_SUPPORT}.** The generated `pipeline.py` uses it",
        "> because it is the direct successor of Batch AI's model (datastores, DataReferences, Estimators); it still",
        "> runs, but plan a move to SDK v2 (`azure-ai-ml`): `v2/` holds the same job as CLI v2 YAML and azure-ai-ml",
        "> code (`DataReference` becomes `Input`/`Output` with `ro_mount`, `download`, `upload`; the step a `command`",
        "> job with `distribution`), and the last column below says what each field became there.",
        "",
        "## Run it",
        "",
        "```bash",
        "python pipeline.py --dry-run                       # every Azure ML object, built offline",
        "export AZURE_BATCHAI_STORAGE_KEY=...               # never written to a file",
        "python pipeline.py --submit --storage-account-name ACCOUNT   # uses ./config.json",
        "",
        "# Azure ML SDK v2 / CLI v2 (v2/, with the azureml-v2 extra: pip install azure-ai-ml)",
        "python v2/submit.py --dry-run                      # loads and validates every v2 file offline",
        "python v2/submit.py --submit --storage-account-name ACCOUNT",
        "# or the same files with the CLI, in this order (each file's first line says how)",
        *_cli_lines(plan),
        "```",
        "",
        "## Summary",
        "",
        "| | |",
        "|---|---|",
        f"| Compute | AmlCompute `{compute.name}`: {compute.vm_size} ({compute.gpus_per_node} GPU/node), "
        f"{compute.min_nodes}-{compute.max_nodes} nodes, {compute.vm_priority} |",
        f"| Container | `{container.image}`"
        + (f" + pip {', '.join(container.pip_packages)}" if container.pip_packages else "")
        + (f" (job.json: `{container.source_image}`)" if container.source_image else "")
        + " |",
        f"| Processes | {launch.process_count} on {launch.node_count} node(s), {launch.mode.value}, "
        f"Azure ML distribution {launch.distribution.value} |",
        f"| Datastores | {', '.join(f'`{d.name}`' for d in plan.datastores) or 'none'} |",
        "",
    ]
    if compute.source_vm_size:
        out += [
            f"Batch AI ran this job on **{compute.source_vm_size}**, which Azure has retired. The cluster uses "
            f"**{compute.vm_size}** instead; choose another size with `azbai migrate --vm-size SIZE` (or edit "
            "`compute_target()` in pipeline.py).",
            "",
        ]
    warnings = [n for n in plan.notes if n.severity is Severity.WARNING]
    infos = [n for n in plan.notes if n.severity is Severity.INFO]
    out += ["## What Azure ML does differently", ""]
    if not warnings and not infos:
        out += ["Nothing: every field has a direct equivalent.", ""]
    for note in warnings:
        out.append(f"- **warning** `{note.field}`: {note.message}")
    for note in infos:
        out.append(f"- `{note.field}`: {note.message}")
    out += [
        "- Mounts: Azure ML mounts blob containers with blobfuse and file shares with SMB, like Batch AI; files "
        "written to a blob mount appear when they are closed.",
        "- Output directories are uploaded when the step ends, also when it fails, to the same "
        "`<prefix>/<segment>/outputs` path Batch AI used; the segment of a pipeline step ends in its run id.",
        "",
        "",
        *_v2_section(plan),
        "## Field by field",
        "",
        "| Batch AI field | value | SDK v1 (pipeline.py) | SDK v2 / CLI v2 (v2/) |",
        "|---|---|---|---|",
    ]
    for row in plan.mapping:
        out.append(
            f"| `{row.field}` | {_cell(row.value)} | {_cell(row.became)} | {_cell(v2_became(plan, row.field))} |"
        )
    out += [
        "",
        "## Environment variables the job sees",
        "",
        "The compatibility launcher (`snapshot/azbai_launcher.py`) sets these before it starts the job, so scripts",
        "that read `$AZ_BATCHAI_*` run unchanged.",
        "",
        "| variable | from | value |",
        "|---|---|---|",
    ]
    for variable in plan.variables:
        out.append(f"| `{variable.name}` | {variable.source.value} | {_cell(variable.value)} |")
    return "\n".join(out) + "\n"


#: what Azure ML SDK v2 (azure-ai-ml 1.35.2) cannot express, and what the v2 files do instead
V2_GAPS = (
    (
        "job preparation on every node",
        "no v2 field: the launcher runs `jobPreparation` on local rank 0 of each node before the toolkit "
        "(the other ranks wait for it), as for v1",
    ),
    (
        "cluster-level mounts (`nodeSetup.mountVolumes`) and setup tasks",
        "AmlCompute has no mounts: each mount is an input (or `rw_mount` output) of every job that uses it, and the "
        "launcher links it under `$AZ_BATCHAI_MOUNT_ROOT`",
    ),
    (
        "mount paths (`relativeMountPath`)",
        "Azure ML chooses where inputs are mounted; the launcher gets each path from the command line "
        "(`--data NAME ${{inputs.X}}`) and recreates the Batch AI layout with links",
    ),
    (
        "NFS file servers and unmanaged file systems",
        "no NFS datastore: move the data to Blob or Files; until then the job gets an empty directory there",
    ),
    (
        "the datastore-path trigger",
        "no datastore trigger in v2: `v2/schedule.yml` polls on a recurrence, running the pipeline with its "
        "default inputs; for a run per new blob, use Event Grid (blob created → a Logic App or Function "
        "→ `az ml job create` / a batch endpoint)",
    ),
    (
        "per-role TensorFlow command lines",
        "one command for every role (`distribution: tensorflow`): the launcher picks the role's own command line "
        "from `TF_CONFIG`",
    ),
    (
        "private registry credentials (`imageSourceRegistry.credentials`)",
        "v2 environments have no registry credentials: push the image to the workspace's container registry, or "
        "give the workspace identity pull access; no password is written",
    ),
    (
        "job `secrets`",
        "v2 jobs have no secrets field: `submit.py` stores each secret from your environment in the workspace "
        "Key Vault, the job runs with `identity: managed`, and the launcher reads it there (azure-keyvault-secrets)",
    ),
    (
        "read-write mounts",
        "a v2 input is mounted read-only; a volume the job names by its mount path (in a command line, its job "
        "preparation, an environment variable, its stdout/stderr prefix or an output kept there) is an `rw_mount` "
        "output instead, which shows what the volume holds; a volume reached only through an input directory stays "
        "a read-only input",
    ),
    (
        "`stdOutErrPathPrefix`",
        "no v2 field: the launcher writes Batch AI's stdout/stderr files on the volume, which is an `rw_mount` "
        "output for that reason, and echoes them into the job's log",
    ),
    (
        "`$AZ_BATCHAI_INPUT_*`/`$AZ_BATCHAI_OUTPUT_*` and the output segment",
        "no such variables in v2: the launcher sets them from the command line; outputs go to Batch AI's "
        "`<prefix>/<segment>/outputs` with the job uuid as `${{name}}` and the workspace filled in by `submit.py` "
        "(`--set outputs.X.path=…` with `az ml`)",
    ),
)


def _cli_lines(plan: Plan) -> list[str]:
    lines = []
    for store in plan.datastores:
        if not store.workspace_default:
            account = " --set account_name=ACCOUNT" if store.account_placeholder else ""
            lines.append(
                f"az ml datastore create -f v2/datastores/{store.name}.yml{account} "
                '--set credentials.account_key="$AZURE_BATCHAI_STORAGE_KEY"'
            )
    lines += [
        f"az ml compute create -f v2/computes/{c.name}.yml" for c in (plan.compute, *plan.extra_computes)
    ]
    job = "pipeline" if is_multi_step(plan) else "job"
    lines.append(
        f"az ml job create -f v2/{job}.yml   # outputs under the segment: --set ...path= with your workspace"
    )
    if plan.trigger is not None:
        lines.append("az ml schedule create -f v2/schedule.yml")
    return lines


def _v2_section(plan: Plan) -> list[str]:
    multi = is_multi_step(plan)
    out = [
        "## Azure ML SDK v2 / CLI v2",
        "",
        f"`v2/{'pipeline.yml` (with `v2/components/`)' if multi else 'job.yml`'} is the job for `az ml job create -f`; "
        "`v2/datastores/` and `v2/computes/` hold what it uses, written without any credential (the key goes in "
        "with `--set credentials.account_key=$AZURE_BATCHAI_STORAGE_KEY`, or from your environment in "
        "`v2/submit.py`)"
        + ("; `v2/schedule.yml` replaces the trigger." if plan.trigger is not None else ".")
        + " The job's scripts still run unchanged through the compatibility launcher.",
        "",
        "What v2 cannot express, and what the v2 files do instead:",
        "",
    ]
    out += [f"- **{what}**: {instead}" for what, instead in V2_GAPS]
    for step in plan.steps:
        if isinstance(step, ParallelStep):
            out.append(
                f"- **the parallel step `{step.name}`**: a `type: parallel` component runs `{step.entry_script}` "
                f"(`init()`, `run(mini_batch)`) on every file of `{step.input}`, mini-batches of "
                f"{step.mini_batch_size}, {step.process_count_per_node} per instance; its output `{step.output}` "
                "is a `uri_folder` output. An entry script that writes to `$AZUREML_BI_OUTPUT_PATH`, as v1's "
                "ParallelRunStep set it, relies on v2's parallel driver setting it too, which was not verified "
                f"offline; otherwise give it `${{{{outputs.{v2.ident(step.output)}}}}}` in `program_arguments`."
            )
    if plan.trigger is not None:
        t = plan.trigger
        out += [
            "",
            f"The trigger watched `{t.datastore}:{t.path_on_datastore or '/'}` (`{t.pattern}`) every "
            f"{t.polling_interval_minutes} minute(s) and gave the new blob's path as the parameter `{t.data_path_parameter}`. "
            "The v2 schedule cannot pass it: each run takes the pipeline's default input (steps whose inputs did not "
            f"change are reused). To process each new video, submit with `--set inputs.{v2.ident(t.data_path_parameter)}.path=…` "
            "from an Event Grid subscription on the storage account (Microsoft's v2 route: Event Grid → Logic App → "
            "batch endpoint).",
        ]
    out.append("")
    return out


def v2_became(plan: Plan, field: str) -> str:
    """What a Batch AI field became in the ``v2/`` files."""
    step, path = _job_of(plan, field)
    job = step.job if step else None
    volume = next((v for v in job.volumes if v.source_path == path), None) if job is not None else None
    if volume is not None and step is not None:
        if volume.data_reference:
            return _reference(plan, step, volume.data_reference)
        if volume.kind.value in ("file_server", "unmanaged"):
            return (
                "no NFS or other file system datastore in v2: the launcher gives the job an empty directory"
            )
        return "no mount: the launcher gives the job an empty directory there"
    if "mountVolumes" in path:
        return "no mount: the launcher gives the job an empty directory there"
    match = re.fullmatch(r"properties\.(input|output)Directories\[(\d+)\](\.path|\.pathPrefix)?", path)
    if match and job is not None and step is not None:
        index = int(match.group(2))
        directories = job.input_directories if match.group(1) == "input" else job.output_directories
        if index < len(directories):
            ref = directories[index].data_reference
            if ref:
                return _reference(plan, step, ref)
        return "a path inside a mounted volume, set by the launcher"
    if path.endswith("Settings") and job is not None:
        dist = v2.distribution(job)
        if dist is None:
            return f"no distribution, `instance_count: {job.node_count}`; the launcher starts the processes"
        kind = dist["type"]
        return f"`distribution: {kind}`, `instance_count: {job.node_count}`; the launcher runs one rank per process"
    if path.startswith("properties.stdOutErrPathPrefix"):
        return "the launcher writes `<prefix>/<segment>/stdouterr/` on the volume's `rw_mount` output"
    if path.startswith("properties.jobPreparation"):
        return "no v2 field: the launcher runs it on each node before the toolkit"
    if path.startswith("properties.constraints") and path.endswith("maxWallClockTime"):
        return "`limits.timeout` (and the launcher)"
    if "credentials" in path and "imageSourceRegistry" in path:
        return "no registry credentials in v2: the workspace registry or an identity with pull access"
    if path.startswith("properties.containerSettings.shmSize"):
        return "`resources.shm_size`"
    if path.startswith("properties.containerSettings"):
        container = (step.container if step else None) or plan.container
        if not container.own_image:
            return f"`environment.image: {container.image}` + a conda file"
        return f"`environment.image: {container.image}`, used as it is (it must have python3)"
    if path.startswith("properties.environmentVariables"):
        return "`environment_variables` (also set by the launcher)"
    if path.startswith("properties.secrets"):
        return "the workspace Key Vault (`submit.py`), read by the launcher with the job's managed identity"
    if path.startswith("(cluster") or path.startswith("cluster") or ".cluster" in path:
        compute = plan.compute_named(step.compute if step else None)
        return f"`v2/computes/{compute.name}.yml`"
    if re.fullmatch(r"steps\[\d+\]\.parallel", path):
        return "a `type: parallel` component (`mini_batch_size`, `error_threshold`, `retry_settings`)"
    return "as for v1"


def _job_of(plan: Plan, field: str) -> tuple[Step | None, str]:
    """The job step a mapping row is about (a pipeline's rows start with the job file), and the field itself."""
    prefix, sep, rest = field.partition(": ")
    steps = plan.job_steps
    if sep and prefix.endswith(".json"):
        stem = prefix.rsplit("/", 1)[-1].split(".")[0]
        named = [s for s in steps if s.name == stem]
        return (named[0] if named else (steps[0] if steps else None)), rest
    return (steps[0] if steps else None), field


def _reference(plan: Plan, step: Step, name: str) -> str:
    job: Job = step.job
    parameter = next((p for p in plan.parameters if p.name == name), None)
    if parameter is not None:
        return f"pipeline input `{v2.ident(name)}` (`{v2.parameter_type(parameter.default)}`, `download`)"
    if name not in {r.name for r in plan.data_references}:
        return f"`uri_folder` data `{v2.ident(name)}` between steps"
    written = v2.written_volumes(job)
    by_reference = {v.data_reference: v.name for v in job.volumes if v.data_reference}
    binding = v2.reference_binding(plan, job, plan.data_reference(name), by_reference.get(name) in written)
    store = plan.data_reference(name).datastore
    direction = "input" if binding.direction == "inputs" else "output"
    return f"`{binding.spec['mode']}` {direction} `{binding.name}` on datastore `{store}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
