"""Plan → every file of the ``v2/`` folder (and the snapshots its ``code:`` paths point at), in memory.

Nothing here imports azure-ai-ml: the YAML comes from the plan (:mod:`.render`) through a small emitter
(:mod:`.yaml_text`), and ``submit.py`` from a template (:mod:`.submit_template`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from azbai.errors import AzbaiError
from azbai.plan.model import CredentialKind, ParallelStep, Plan
from azbai.plan.serialize import job_to_json
from azbai.targets.azureml_v2 import assets, pipeline, render, yaml_text
from azbai.targets.azureml_v2.submit_template import TEMPLATE

V2 = "v2"
#: the first line of a job file says what the CLI leaves to the user
FILLS = "(python v2/submit.py fills in the {subscription}, {resource_group}, {workspace} of output paths)"
#: the compatibility launcher, beside this package (``azbai/launcher.py``)
LAUNCHER_SOURCE = Path(__file__).resolve().parents[2] / "launcher.py"
ACCOUNT_PLACEHOLDER = "<AZURE_BATCHAI_STORAGE_ACCOUNT>"
#: what ``--dry-run`` puts into the segment in place of a workspace
OFFLINE_WORKSPACE = {
    "subscription": "00000000-0000-0000-0000-000000000000",
    "resource_group": "offline",
    "workspace": "offline",
}
_SKIPPED = ("__pycache__", ".ipynb_checkpoints", ".azbai", ".git")
_MAX_SNAPSHOT = 50 * 1024 * 1024


def render_files(plan: Plan, base_dir: Path | None = None) -> dict[str, str | bytes]:
    """Every v2 output file by its path relative to the migration's output directory.

    ``v2/job.yml`` (one job) or ``v2/pipeline.yml`` + ``v2/components/*.yml`` (a pipeline), ``v2/datastores/*.yml``,
    ``v2/computes/*.yml``, ``v2/schedule.yml`` (a triggered pipeline), ``v2/submit.py``, and the snapshots the
    ``code:`` paths name: ``snapshot/`` (one job) or ``snapshot/<step>/`` (the same folders v1 writes).
    ``base_dir`` is where a pipeline file's relative paths start (a parallel step's source directory).
    """
    files: dict[str, str | bytes] = {}
    multi = render.is_multi_step(plan)
    if multi:
        nodes = pipeline.pipeline_nodes(plan)
        job_file = "pipeline.yml"
        files[f"{V2}/pipeline.yml"] = yaml_text.dump(
            pipeline.pipeline_document(plan, nodes),
            [f"az ml job create -f {V2}/pipeline.yml  {FILLS}"],
        )
        for node in nodes:
            files[f"{V2}/components/{node.name}.yml"] = yaml_text.dump(node.component)
        segment_fields = {k: v for n in nodes for k, v in n.segment_keys.items()}
        vault_fields = [
            f"jobs.{n.name}.environment_variables.{render.VAULT_VARIABLE}" for n in nodes if n.vault
        ]
    else:
        job_file = "job.yml"
        files[f"{V2}/job.yml"] = yaml_text.dump(
            render.job_document(plan),
            [f"az ml job create -f {V2}/job.yml  {FILLS}"],
        )
        segment_fields = render.job_segment_keys(plan)
        vault_fields = [f"environment_variables.{render.VAULT_VARIABLE}"] if render.has_secrets(plan) else []
    for store in plan.datastores:
        if store.workspace_default:
            continue  # the workspace's own store exists already
        path = f"{V2}/datastores/{store.name}.yml"
        files[path] = yaml_text.dump(assets.datastore_document(store), assets.datastore_header(store, path))
    for compute in (plan.compute, *plan.extra_computes):
        path = f"{V2}/computes/{compute.name}.yml"
        document = assets.compute_document(compute, render.has_secrets(plan))
        files[path] = yaml_text.dump(document, assets.compute_header(compute, path))
    schedule = pipeline.schedule_document(plan)
    if schedule is not None:
        files[f"{V2}/schedule.yml"] = yaml_text.dump(
            schedule, [f"az ml schedule create -f {V2}/schedule.yml"]
        )
    files[f"{V2}/submit.py"] = render_submit(
        plan, job_file, segment_fields, vault_fields, schedule is not None
    )
    files.update(snapshot_files(plan, base_dir))
    return files


def snapshot_files(plan: Plan, base_dir: Path | None) -> dict[str, str | bytes]:
    """The folders the ``code:`` paths point at: the launcher and its job section, or a parallel step's source."""
    try:
        launcher = LAUNCHER_SOURCE.read_text(encoding="utf-8")
    except OSError as exc:
        raise AzbaiError(f"the compatibility launcher is missing from the azbai package: {exc}") from exc
    files: dict[str, str | bytes] = {}
    if not render.is_multi_step(plan):
        files[f"snapshot/{render.LAUNCHER_FILE}"] = launcher
        files[f"snapshot/{render.JOB_FILE}"] = job_to_json(plan.job_steps[0].job)
        return files
    for step in plan.steps:
        folder = f"snapshot/{step.name}"
        if isinstance(step, ParallelStep):
            files.update(_copy_source(Path(base_dir or ".") / step.source_directory, folder))
        else:
            files[f"{folder}/{render.LAUNCHER_FILE}"] = launcher
            files[f"{folder}/{render.JOB_FILE}"] = job_to_json(step.job)
    return files


def _copy_source(source: Path, folder: str) -> dict[str, str | bytes]:
    if not source.is_dir():
        raise AzbaiError(f"the parallel step's source directory {source} does not exist")
    files: dict[str, str | bytes] = {}
    total = 0
    try:
        for path in sorted(source.rglob("*")):
            if not path.is_file() or any(part in _SKIPPED for part in path.relative_to(source).parts):
                continue
            total += path.stat().st_size
            if total > _MAX_SNAPSHOT:
                raise AzbaiError(
                    f"{source} holds more than {_MAX_SNAPSHOT // 2**20} MB: keep data out of a step's code"
                )
            files[f"{folder}/{path.relative_to(source).as_posix()}"] = path.read_bytes()
    except OSError as exc:
        raise AzbaiError(f"cannot read the parallel step's source directory {source}: {exc}") from exc
    return files


def render_submit(
    plan: Plan, job_file: str, segment_fields: dict[str, str], vault_fields: list[str], schedule: bool
) -> str:
    """The text of ``v2/submit.py``."""
    secrets = {s.name: s for step in plan.job_steps for s in step.job.secrets}.values()
    stores = [d for d in plan.datastores if not d.workspace_default]
    header = "\n".join(
        [
            f'"""Azure ML SDK v2 (azure-ai-ml) for the Batch AI job {_safe(plan.name)}, generated by azbai.',
            "",
            f"The YAML files beside this script are the migration of {_safe(plan.source.file)}, ready for `az ml ... create -f`",
            "too. This script loads them with azure-ai-ml's own loaders, adds what no file holds (the storage key,",
            "the workspace in Batch AI's output segment, where the job finds its secrets) and submits them:",
            "",
            "    python v2/submit.py --dry-run             load and validate every file offline, print a summary",
            "    python v2/submit.py --submit              create datastores and computes, store secrets, submit",
            "    python v2/submit.py --submit --schedule   create the schedule instead of one run",
            "",
            "The workspace comes from config.json (--config), the storage account name from --storage-account-name",
            "or $AZURE_BATCHAI_STORAGE_ACCOUNT, its key from $AZURE_BATCHAI_STORAGE_KEY, job secrets from your",
            "environment. None of them is ever written to a file. Needs azure-ai-ml; --submit also azure-identity,",
            "and azure-keyvault-secrets when the job has secrets.",
            '"""',
        ]
    )
    constants = [
        f"JOB_FILE = {_py(job_file)}",
        f"SCHEDULE_FILE = {_py('schedule.yml' if schedule else None)}",
        f"EXPERIMENT = {_py(plan.experiment)}",
        f"ACCOUNT_PLACEHOLDER = {_py(ACCOUNT_PLACEHOLDER)}",
        "#: job.json used <AZURE_BATCHAI_STORAGE_ACCOUNT>: the account name must be given when submitting",
        f"NEEDS_ACCOUNT = {_py(any(d.account_placeholder for d in stores))}",
        "#: datastore name -> (its file, the file's account name is the placeholder, identity-based: no key)",
        _block(
            "DATASTORES",
            "{",
            "}",
            [
                _tuple_row(
                    f"{_py(d.name)}: ",
                    (
                        f"datastores/{d.name}.yml",
                        d.account_placeholder,
                        d.credential is CredentialKind.WORKSPACE,
                    ),
                )
                for d in stores
            ],
        ),
        _block(
            "COMPUTES",
            "[",
            "]",
            [f"{_py(f'computes/{c.name}.yml')}," for c in (plan.compute, *plan.extra_computes)],
        ),
        "#: job fields holding Batch AI's output segment: {subscription}, {resource_group}, {workspace} filled here",
        _block("SEGMENT_FIELDS", "{", "}", [f"{_py(k)}: {_py(v)}," for k, v in segment_fields.items()]),
        "#: job fields telling the launcher which Key Vault holds the job's secrets",
        _block("VAULT_FIELDS", "[", "]", [f"{_py(k)}," for k in vault_fields]),
        "#: job secrets: (name, where the value comes from, Key Vault URL); values come from your environment",
        _block("SECRETS", "[", "]", [_tuple_row("", (s.name, s.source, s.secret_url)) for s in secrets]),
        "#: what --dry-run puts in the segment in place of a workspace",
        _block("OFFLINE_WORKSPACE", "{", "}", [f"{_py(k)}: {_py(v)}," for k, v in OFFLINE_WORKSPACE.items()]),
    ]
    return TEMPLATE.replace("__HEADER__", header).replace("__CONSTANTS__", "\n".join(constants))


def _safe(text: str) -> str:
    """Text from a job file, made harmless inside the generated docstring."""
    return re.sub(r"[^\w./ -]", "_", text)


def _py(value: object) -> str:
    """A Python literal in ``ruff format``'s style: double quotes unless the text holds some."""
    if isinstance(value, str):
        return repr(value) if '"' in value and "'" not in value else json.dumps(value, ensure_ascii=False)
    if isinstance(value, tuple):
        return "(" + ", ".join(_py(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return repr(value)


def _block(name: str, opening: str, closing: str, rows: list[str]) -> str:
    """A constant written one item per line (the trailing commas keep ``ruff format`` from joining them)."""
    if not rows:
        return f"{name} = {opening}{closing}"
    body = [f"    {line}" for row in rows for line in row.split("\n")]
    return "\n".join([f"{name} = {opening}", *body, closing])


def _tuple_row(prefix: str, values: tuple[object, ...]) -> str:
    """``prefix(a, b, c),`` on one line when it fits in 110 columns, else one value a line, as ruff splits it."""
    line = f"{prefix}{_py(values)},"
    if len(line) + 4 <= 110:
        return line
    return "\n".join([f"{prefix}(", *(f"    {_py(v)}," for v in values), "),"])
