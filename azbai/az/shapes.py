"""Batch AI objects in the shape the az CLI printed them: every field of the 2018-05-01 model, ``null`` when unset.

The CLI deserialised job.json into ``azure.mgmt.batchai`` models and printed them back, so a job showed every field
of its model; the field list is azbai's own model of the schema (:mod:`azbai.source.model`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, get_args, get_origin

API_VERSION = "2018-05-01"
#: keys whose values are secrets wherever they appear in a Batch AI object
SECRET_KEYS = frozenset({"accountKey", "password", "adminUserPassword", "sasToken"})


def modelled(cls: type, value: Any) -> Any:
    """``value`` (a job.json object) with every field of the model class ``cls`` present (``None`` when absent)."""
    if not isinstance(value, dict) or not dataclasses.is_dataclass(cls):
        return value
    hints = typing.get_type_hints(cls, include_extras=True)
    out: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if API_VERSION not in field.metadata.get("versions", (API_VERSION,)):
            continue
        key = field.metadata["json"]
        out[key] = _value(hints[field.name], value.get(key))
    return out


def _value(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    if get_origin(hint) is typing.Annotated:
        hint = get_args(hint)[0]
    if get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in get_args(hint) if a is not type(None))
    if get_origin(hint) is tuple:
        item = get_args(hint)[0]
        return [_value(item, v) for v in value] if isinstance(value, list) else value
    if dataclasses.is_dataclass(hint):
        return modelled(hint, value)  # type: ignore[arg-type]
    return value


def sanitized(value: Any) -> Any:
    """``value`` with every secret (keys, passwords, secret values) replaced by ``None``."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key in SECRET_KEYS:
                out[key] = None
            elif key == "secrets" and isinstance(item, list):
                out[key] = [{**s, "value": None} if isinstance(s, dict) else s for s in item]
            else:
                out[key] = sanitized(item)
        return out
    if isinstance(value, list):
        return [sanitized(v) for v in value]
    return value


def mount_volumes(volumes: Any) -> Any:
    """Mount volumes as the CLI printed them: every field, and each share's or container's ``credentials`` an
    object of nulls (the service never returned keys)."""
    from azbai.source.model import MountVolumes

    shaped = modelled(MountVolumes, volumes)
    if not isinstance(shaped, dict):
        return shaped
    for kind in ("azureFileShares", "azureBlobFileSystems"):
        for reference in shaped.get(kind) or []:
            credentials = reference.get("credentials") or {}
            reference["credentials"] = {
                "accountKey": None,
                "accountKeySecretReference": credentials.get("accountKeySecretReference"),
            }
    return shaped


def node_setup(setup: Any) -> Any:
    """A cluster's ``nodeSetup`` as the CLI printed it (with the setup task's ``stdOutErrPathSuffix``)."""
    from azbai.source.model import NodeSetup

    if not isinstance(setup, dict):
        return setup
    shaped = modelled(NodeSetup, setup)
    if setup.get("mountVolumes"):
        shaped["mountVolumes"] = mount_volumes(setup["mountVolumes"])
    task = setup.get("setupTask")
    if task:
        shaped["setupTask"]["stdOutErrPathSuffix"] = task.get("stdOutErrPathSuffix")
    return shaped
