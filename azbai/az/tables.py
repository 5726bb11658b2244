"""az's table layouts for Batch AI results (the module's ``_format.py``): the columns ``-o table`` showed."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


def _name_after(resource_id: str, kind: str) -> str:
    parts = resource_id.split("/")
    lowered = [p.lower() for p in parts]
    return parts[lowered.index(kind) + 1] if kind in lowered and lowered.index(kind) + 1 < len(parts) else ""


def _each(row: Any) -> Any:
    def table(result: Any) -> Any:
        return [row(item) for item in result] if isinstance(result, list) else row(result)

    return table


def _workspace(item: dict[str, Any]) -> OrderedDict[str, Any]:
    return OrderedDict(
        [
            ("Name", item["name"]),
            ("Resource Group", item["resourceGroup"]),
            ("Location", item["location"]),
            ("State", item["provisioningState"]),
        ]
    )


def _cluster(item: dict[str, Any]) -> OrderedDict[str, Any]:
    counts = item["nodeStateCounts"]
    return OrderedDict(
        [
            ("Name", item["name"]),
            ("Resource Group", item["resourceGroup"]),
            ("Workspace", _name_after(item["id"], "workspaces")),
            ("VM Size", item["vmSize"]),
            ("State", "deleting" if item["provisioningState"] == "deleting" else item["allocationState"]),
            ("Idle", str(counts["idleNodeCount"])),
            ("Running", str(counts["runningNodeCount"])),
            ("Preparing", str(counts["preparingNodeCount"])),
            ("Leaving", str(counts["leavingNodeCount"])),
            ("Unusable", str(counts["unusableNodeCount"])),
        ]
    )


def _experiment(item: dict[str, Any]) -> OrderedDict[str, Any]:
    return OrderedDict(
        [
            ("Name", item["name"]),
            ("Resource Group", item["resourceGroup"]),
            ("Workspace", _name_after(item["id"], "workspaces")),
            ("State", item["provisioningState"]),
        ]
    )


def _job(item: dict[str, Any]) -> OrderedDict[str, Any]:
    cluster = item["cluster"]["id"]
    info = item["executionInfo"]
    return OrderedDict(
        [
            ("Name", item["name"]),
            ("Cluster", _name_after(cluster, "clusters")),
            ("Cluster RG", item["cluster"]["resourceGroup"]),
            ("Cluster Workspace", _name_after(cluster, "workspaces")),
            ("Tool", item["toolType"]),
            ("Nodes", item["nodeCount"]),
            ("State", "deleting" if item["provisioningState"] == "deleting" else item["executionState"]),
            ("Exit code", str(info["exitCode"]) if info and info["exitCode"] is not None else ""),
        ]
    )


def _file(item: dict[str, Any]) -> OrderedDict[str, Any]:
    return OrderedDict(
        [
            ("Name", item["name"]),
            ("Type", item["fileType"]),
            ("Size", "" if item["fileType"] == "directory" else str(item["contentLength"])),
            ("Modified", item["lastModified"] or " "),
        ]
    )


def _node(item: dict[str, Any]) -> OrderedDict[str, Any]:
    return OrderedDict([("ID", item["nodeId"]), ("IP", item["ipAddress"]), ("SSH Port", int(item["port"]))])


WORKSPACE = _each(_workspace)
CLUSTER = _each(_cluster)
EXPERIMENT = _each(_experiment)
JOB = _each(_job)
FILES = _each(_file)
NODES = _each(_node)
