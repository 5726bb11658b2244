"""Plan → ``MIGRATION.md``: each Batch AI field, what it became, and what Azure ML does differently."""

from __future__ import annotations

from azbai.plan.model import Plan, Severity
from azbai.targets.azureml_v1.codegen import SDK_V1_END_OF_SUPPORT


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
        "> runs, but plan a move to SDK v2 (`azure-ai-ml`): datastores stay, `DataReference` becomes `Input`/`Output`",
        "> (`ro_mount`, `download`, `upload`), the step becomes a `command` job with `distribution`.",
        "",
        "## Run it",
        "",
        "```bash",
        "python pipeline.py --dry-run                       # every Azure ML object, built offline",
        "export AZURE_BATCHAI_STORAGE_KEY=...               # never written to a file",
        "python pipeline.py --submit --storage-account-name ACCOUNT   # uses ./config.json",
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
        "## Field by field",
        "",
        "| Batch AI field | value | became |",
        "|---|---|---|",
    ]
    for row in plan.mapping:
        out.append(f"| `{row.field}` | {_cell(row.value)} | {_cell(row.became)} |")
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


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
