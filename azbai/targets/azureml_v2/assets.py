"""Plan → ``v2/datastores/<name>.yml`` and ``v2/computes/<name>.yml``, never with a credential."""

from __future__ import annotations

from typing import Any

from azbai.plan.model import Compute, Datastore, StoreKind
from azbai.targets.azureml_v2.render import SCHEMA


def datastore_document(store: Datastore) -> dict[str, Any]:
    """``v2/datastores/<name>.yml``: never with credentials (``--set credentials.account_key=…`` at submit)."""
    blob = store.kind is StoreKind.BLOB_CONTAINER
    doc: dict[str, Any] = {
        "$schema": SCHEMA.format("azureBlob" if blob else "azureFile"),
        "type": "azure_blob" if blob else "azure_file",
        "name": store.name,
        "description": f"Batch AI {'blob container' if blob else 'file share'} {store.container_name}",
        "account_name": store.account_name,
        ("container_name" if blob else "file_share_name"): store.container_name,
        "endpoint": store.endpoint,
        "protocol": "https",
    }
    return doc


def datastore_header(store: Datastore, path: str) -> list[str]:
    """The comment lines that say how to create the datastore with its key, which no file holds."""
    account = " --set account_name=ACCOUNT" if store.account_placeholder else ""
    lines = [
        f'az ml datastore create -f {path}{account} --set credentials.account_key="$AZURE_BATCHAI_STORAGE_KEY"'
    ]
    if store.key_secret_url:
        lines.append(f"the key is in Key Vault: {store.key_secret_url}")
    lines.append(
        "(without --set credentials...: an identity-based datastore; no key is ever written to this file)"
    )
    return lines


def compute_document(compute: Compute, identity: bool) -> dict[str, Any]:
    """``v2/computes/<name>.yml``: the AmlCompute cluster."""
    doc: dict[str, Any] = {
        "$schema": SCHEMA.format("amlCompute"),
        "type": "amlcompute",
        "name": compute.name,
        "size": compute.vm_size,
        "min_instances": compute.min_nodes,
        "max_instances": compute.max_nodes,
        "idle_time_before_scale_down": compute.idle_seconds_before_scaledown,
        "tier": "low_priority" if "low" in compute.vm_priority.lower() else "dedicated",
    }
    if identity:
        doc["identity"] = {"type": "system_assigned"}
    return doc


def compute_header(compute: Compute, path: str) -> list[str]:
    """The comment lines above a compute file: how to create it, and the retired-size advice."""
    lines = [f"az ml compute create -f {path}"]
    if compute.source_vm_size:
        lines += [
            f"Batch AI ran on {compute.source_vm_size}, which Azure retired; {compute.vm_size} replaces it",
            "(azbai migrate --vm-size SIZE to choose another; see MIGRATION.md).",
        ]
    return lines
