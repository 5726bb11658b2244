"""``az batchai workspace|experiment …``: local namespaces (records under ``<workspace>/az/groups/…``)."""

from __future__ import annotations

from typing import Any

from azbai.az.context import Context, Result, timestamp
from azbai.az.state import check_resource_name, resource_id

# -- workspaces and experiments -----------------------------------------------------------------------------------


def workspace_json(group: str, record: dict[str, Any]) -> dict[str, Any]:
    """A workspace as ``az batchai workspace show`` printed it."""
    return {
        "creationTime": record["creationTime"],
        "id": resource_id(group, "Microsoft.BatchAI/workspaces", record["name"]),
        "location": record["location"],
        "name": record["name"],
        "provisioningState": "succeeded",
        "provisioningStateTransitionTime": record["creationTime"],
        "resourceGroup": group,
        "tags": None,
        "type": "Microsoft.BatchAI/workspaces",
    }


def workspace_create(
    ctx: Context, resource_group: str, workspace: str, location: str | None, **_: Any
) -> Result:
    """``az batchai workspace create -g GROUP -n NAME``."""
    group = ctx.ns.group(resource_group)
    path = ctx.ns.workspace_dir(group["name"], check_resource_name(workspace, "workspace")) / "workspace.json"
    record = (
        ctx.ns.load(path)
        if path.exists()
        else {
            "name": workspace,
            "location": location or group["location"],
            "creationTime": timestamp(),
        }
    )
    ctx.ns.save(path, record)
    return Result(workspace_json(group["name"], record))


def workspace_show(ctx: Context, resource_group: str, workspace: str, **_: Any) -> Result:
    """``az batchai workspace show -g GROUP -n NAME``."""
    group = ctx.ns.group(resource_group)
    return Result(workspace_json(group["name"], ctx.ns.batchai_workspace(resource_group, workspace)))


def workspace_list(ctx: Context, resource_group: str | None, **_: Any) -> Result:
    """``az batchai workspace list [-g GROUP]``."""
    items = []
    for group in ctx.ns.records("groups/*/group.json"):
        if resource_group and group["name"].lower() != resource_group.lower():
            continue
        base = ctx.ns.group_dir(group["name"])
        items += [
            workspace_json(group["name"], r) for r in ctx.ns.records("workspaces/*/workspace.json", base)
        ]
    return Result(items)


def workspace_delete(ctx: Context, resource_group: str, workspace: str, yes: bool, **_: Any) -> Result:
    """``az batchai workspace delete -g GROUP -n NAME [-y]``: its clusters, experiments and jobs go too."""
    record = ctx.ns.batchai_workspace(resource_group, workspace)
    if not yes and not ctx.confirm("Are you sure you want to perform this operation?"):
        return Result(printed=False)
    delete_workspace_contents(ctx, resource_group, record["name"])
    ctx.ns.remove(ctx.ns.workspace_dir(resource_group, workspace))
    return Result(printed=False)


def delete_workspace_contents(ctx: Context, group: str, workspace: str) -> None:
    """Stop and forget every job of a workspace (their outputs on shares and containers stay, as on Azure)."""
    from azbai.az.jobs import forget_job

    base = ctx.ns.workspace_dir(group, workspace)
    for path in sorted(base.glob("experiments/*/jobs/*.json")):
        forget_job(ctx, ctx.ns.load(path), path)


def experiment_json(group: str, workspace: str, record: dict[str, Any]) -> dict[str, Any]:
    """An experiment as ``az batchai experiment show`` printed it."""
    return {
        "creationTime": record["creationTime"],
        "id": resource_id(group, "Microsoft.BatchAI/workspaces", workspace, "experiments", record["name"]),
        "name": record["name"],
        "provisioningState": "succeeded",
        "provisioningStateTransitionTime": record["creationTime"],
        "resourceGroup": group,
        "type": "Microsoft.BatchAI/workspaces/experiments",
    }


def experiment_create(ctx: Context, resource_group: str, workspace: str, name: str, **_: Any) -> Result:
    """``az batchai experiment create -g GROUP -w WORKSPACE -n NAME``."""
    ws = ctx.ns.batchai_workspace(resource_group, workspace)
    path = (
        ctx.ns.experiment_dir(resource_group, ws["name"], check_resource_name(name, "experiment"))
        / "experiment.json"
    )
    record = ctx.ns.load(path) if path.exists() else {"name": name, "creationTime": timestamp()}
    ctx.ns.save(path, record)
    return Result(experiment_json(ctx.ns.group(resource_group)["name"], ws["name"], record))


def experiment_show(ctx: Context, resource_group: str, workspace: str, name: str, **_: Any) -> Result:
    """``az batchai experiment show``."""
    record = ctx.ns.experiment(resource_group, workspace, name)
    ws = ctx.ns.batchai_workspace(resource_group, workspace)
    return Result(experiment_json(ctx.ns.group(resource_group)["name"], ws["name"], record))


def experiment_list(ctx: Context, resource_group: str, workspace: str, **_: Any) -> Result:
    """``az batchai experiment list -g GROUP -w WORKSPACE``."""
    ws = ctx.ns.batchai_workspace(resource_group, workspace)
    group = ctx.ns.group(resource_group)["name"]
    base = ctx.ns.workspace_dir(resource_group, workspace)
    return Result(
        [experiment_json(group, ws["name"], r) for r in ctx.ns.records("experiments/*/experiment.json", base)]
    )


def experiment_delete(
    ctx: Context, resource_group: str, workspace: str, name: str, yes: bool, **_: Any
) -> Result:
    """``az batchai experiment delete … [-y]``: its jobs go too."""
    ctx.ns.experiment(resource_group, workspace, name)
    if not yes and not ctx.confirm("Are you sure you want to perform this operation?"):
        return Result(printed=False)
    from azbai.az.jobs import forget_job

    directory = ctx.ns.experiment_dir(resource_group, workspace, name)
    for path in sorted(directory.glob("jobs/*.json")):
        forget_job(ctx, ctx.ns.load(path), path)
    ctx.ns.remove(directory)
    return Result(printed=False)
