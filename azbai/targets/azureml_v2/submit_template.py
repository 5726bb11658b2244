"""The text of ``v2/submit.py``: readable azure-ai-ml code, the same for every plan but for its constants.

The template below is already in ``ruff format`` style; :func:`render_submit` only replaces the ``__HEADER__`` and
``__CONSTANTS__`` lines, and every value it writes comes from ``repr``, so no content of a job file becomes code.
"""

from __future__ import annotations

TEMPLATE = '''\
__HEADER__

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
__CONSTANTS__


def fill(text: str, workspace: dict) -> str:
    """Put the workspace into Batch AI's output segment (Azure ML fills ${{name}}, the job's uuid, itself)."""
    for key, value in workspace.items():
        text = text.replace("{" + key + "}", value)
    return text


def job_overrides(workspace: dict, vault_url: str | None = None) -> list:
    """What `--set` would change on the CLI: the segment's workspace, and where the job finds its secrets."""
    overrides = [{key: fill(value, workspace)} for key, value in SEGMENT_FIELDS.items()]
    if vault_url:
        overrides += [{key: vault_url} for key in VAULT_FIELDS]
    return overrides


def load_the_job(workspace: dict, vault_url: str | None = None):
    """The job (or pipeline) file as an azure-ai-ml entity."""
    from azure.ai.ml import load_job

    return load_job(HERE / JOB_FILE, params_override=job_overrides(workspace, vault_url))


def load_datastores(account_name: str, account_key: str | None) -> dict:
    """Each datastore file; the key goes in here, as `--set credentials.account_key=...` does on the CLI."""
    from azure.ai.ml import load_datastore

    stores = {}
    for name, (file, account_placeholder, identity_based) in DATASTORES.items():
        overrides = []
        if account_placeholder:
            overrides.append({"account_name": account_name})
        if account_key and not identity_based:
            overrides.append({"credentials.account_key": account_key})
        stores[name] = load_datastore(HERE / file, params_override=overrides)
    return stores


def load_computes() -> dict:
    """Each AmlCompute file."""
    from azure.ai.ml import load_compute

    computes = {}
    for file in COMPUTES:
        compute = load_compute(HERE / file)
        computes[compute.name] = compute
    return computes


def load_the_schedule(job):
    """The schedule file, creating the job as loaded here (with the workspace in its paths); None without one."""
    if SCHEDULE_FILE is None:
        return None
    # azure-ai-ml 1.35.2 does not export load_schedule from azure.ai.ml
    from azure.ai.ml.entities._load_functions import load_schedule

    schedule = load_schedule(HERE / SCHEDULE_FILE)
    schedule.create_job = job
    return schedule


def build(
    workspace: dict | None = None,
    account_name: str = ACCOUNT_PLACEHOLDER,
    account_key: str | None = None,
    vault_url: str | None = None,
) -> dict:
    """Every azure-ai-ml entity of the migration, loaded from the YAML files; nothing here contacts Azure."""
    job = load_the_job(workspace or OFFLINE_WORKSPACE, vault_url)
    return {
        "job": job,
        "datastores": load_datastores(account_name, account_key),
        "computes": load_computes(),
        "schedule": load_the_schedule(job),
    }


def validate() -> list:
    """azure-ai-ml's own offline validation of the job file (what `az ml job validate` does without a workspace)."""
    # ml_client=None: schema and entity checks only, nothing is sent
    from azure.ai.ml.entities._validate_funcs import validate_job

    result = validate_job(HERE / JOB_FILE, params_override=job_overrides(OFFLINE_WORKSPACE))
    return [] if result.passed else [f"{JOB_FILE}: {result.error_messages}"]


def describe(job) -> dict:
    """A job or pipeline node: where it runs, its data and how its processes start."""
    summary = {"type": job.type, "compute": job.compute}
    if job.type == "pipeline":
        summary["jobs"] = {name: describe(node) for name, node in job.jobs.items()}
        summary["inputs"] = sorted(job.inputs)
        return summary
    resources = getattr(job, "resources", None)
    distribution = getattr(job, "distribution", None)
    summary["instance_count"] = resources.instance_count if resources else None
    summary["distribution"] = distribution.type if distribution else None
    summary["inputs"] = {n: getattr(i, "mode", None) for n, i in job.inputs.items()}
    summary["outputs"] = {n: getattr(o, "mode", None) for n, o in job.outputs.items()}
    return summary


def summarize(entities: dict) -> dict:
    """What --dry-run prints (never a credential)."""
    schedule = entities["schedule"]
    return {
        "job": describe(entities["job"]),
        "datastores": {name: type(s).__name__ for name, s in entities["datastores"].items()},
        "computes": {
            name: [c.size, c.min_instances, c.max_instances, c.tier]
            for name, c in entities["computes"].items()
        },
        "schedule": None if schedule is None else [schedule.name, type(schedule.trigger).__name__],
    }


def store_secrets(ml_client, credential) -> str | None:
    """Copy each job secret from your environment into the workspace Key Vault; returns the vault's URL."""
    if not SECRETS:
        return None
    from azure.keyvault.secrets import SecretClient

    vault = ml_client.workspaces.get(ml_client.workspace_name).key_vault.rstrip("/").rsplit("/", 1)[-1]
    vault_url = f"https://{vault}.vault.azure.net/"
    client = SecretClient(vault_url=vault_url, credential=credential)
    missing = []
    for name, source, url in SECRETS:
        value = os.environ.get(name)
        if value is None:
            missing.append(name if source == "environment" else f"{name} (Key Vault {url})")
            continue
        # Key Vault names allow letters, digits and dashes; the launcher asks for the same name
        client.set_secret(name.replace("_", "-"), value)
    if missing:
        print("warning: set these secrets in your environment or Key Vault:", *missing, file=sys.stderr)
    return vault_url


def submit(args, account_name: str, account_key: str | None) -> int:
    """Create the datastores and computes, store the job's secrets, then submit the job or create its schedule."""
    from azure.ai.ml import MLClient
    from azure.identity import DefaultAzureCredential

    credential = DefaultAzureCredential()
    ml_client = MLClient.from_config(credential, path=args.config)
    workspace = {
        "subscription": ml_client.subscription_id,
        "resource_group": ml_client.resource_group_name,
        "workspace": ml_client.workspace_name,
    }
    vault_url = store_secrets(ml_client, credential)
    entities = build(workspace, account_name, account_key, vault_url)
    for name, store in entities["datastores"].items():
        if account_key or DATASTORES[name][2]:
            ml_client.datastores.create_or_update(store)
        else:
            ml_client.datastores.get(name)  # no key given: the datastore must already exist
    existing = {c.name for c in ml_client.compute.list()}
    for name, compute in entities["computes"].items():
        if name not in existing:
            ml_client.compute.begin_create_or_update(compute).result()
    if args.schedule and entities["schedule"] is not None:
        schedule = ml_client.schedules.begin_create_or_update(entities["schedule"]).result()
        print(f"schedule {schedule.name} created")
        return 0
    job = ml_client.jobs.create_or_update(entities["job"], experiment_name=EXPERIMENT)
    print(f"submitted {job.name}: {job.studio_url}")
    return 0


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--dry-run", action="store_true", help="load and validate every file offline")
    mode.add_argument("--submit", action="store_true", help="submit to the workspace in --config")
    parser.add_argument("--schedule", action="store_true", help="with --submit: create the schedule")
    parser.add_argument("--config", default="config.json", help="the workspace's config.json")
    parser.add_argument("--storage-account-name", default=os.environ.get("AZURE_BATCHAI_STORAGE_ACCOUNT"))
    parser.add_argument("--json", action="store_true", help="print the --dry-run summary as JSON")
    args = parser.parse_args(argv)
    account_name = args.storage_account_name or ACCOUNT_PLACEHOLDER
    if args.dry_run:
        problems = validate()
        summary = summarize(build(account_name=account_name))
        if args.json:
            print(json.dumps(summary, indent=2))
        else:
            print(f"Loaded and validated offline with azure-ai-ml: {JOB_FILE} and what it uses")
            for key, value in summary.items():
                print(f"  {key}: {json.dumps(value)}")
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1 if problems else 0
    if NEEDS_ACCOUNT and account_name == ACCOUNT_PLACEHOLDER:
        parser.error("pass --storage-account-name or set AZURE_BATCHAI_STORAGE_ACCOUNT (no file names it)")
    return submit(args, account_name, os.environ.get("AZURE_BATCHAI_STORAGE_KEY"))


if __name__ == "__main__":
    sys.exit(main())
'''
