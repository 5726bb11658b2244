"""Batch AI objects in the shape the az CLI printed them: every field of the 2018-05-01 model, ``null`` when unset.

The CLI deserialised job.json into ``azure.mgmt.batchai`` models and printed them back, so a job showed every field
of its model; the field list is azbai's own model of the schema (:mod:`azbai.source.model`).
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any, get_args, get_origin

from azbai.source.fields import SECRET_CONTAINERS, SECRET_KEYS

API_VERSION = "2018-05-01"
_SECRET_KEYS_LOWER = frozenset(k.lower() for k in SECRET_KEYS)
#: the keys under ``credentials`` or ``secrets`` whose values are names, not secrets
_NAME_KEYS = frozenset({"name", "username", "id", "secretUrl"})


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


def stored(cls: type, value: Any) -> Any:
    """What of ``value`` (a job.json object read as model class ``cls``) azbai may keep and print.

    Only the keys the model knows (those of every schema version; azbai ignored the others, as Batch AI did), each
    secret-marked field (keys, passwords, secret values, instrumentation keys) ``None``, URLs without their query
    strings (a SAS token). Command lines are kept as they are (a setup task runs from the record; the reader warns
    of a SAS token in one). The model's depth bounds the walk.
    """
    if not isinstance(value, dict) or not dataclasses.is_dataclass(cls):
        return None
    hints = _hints(cls)
    out: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        key = field.metadata["json"]
        if key not in value:
            continue
        item = value[key]
        out[key] = None if field.metadata["secret"] or item is None else _stored(hints[field.name], item, key)
    return out


def _stored(hint: Any, value: Any, key: str) -> Any:
    hint = _bare(hint)
    if get_origin(hint) is tuple:
        item = get_args(hint)[0]
        return [_stored(item, v, key) for v in value] if isinstance(value, list) else None
    if dataclasses.is_dataclass(hint):
        return stored(hint, value)  # type: ignore[arg-type]
    if isinstance(value, (dict, list)):
        return None  # not what the model takes (azbai reported it): nothing of it is kept
    if isinstance(value, str):
        return without_query(value) if key.lower().endswith("url") else value
    return value


def without_query(url: str) -> str:
    """``url`` without its query string and fragment (where a SAS token is)."""
    return url.split("?", 1)[0].split("#", 1)[0]


def _bare(hint: Any) -> Any:
    if get_origin(hint) is typing.Annotated:
        hint = get_args(hint)[0]
    if get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in get_args(hint) if a is not type(None))
    return hint


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def sanitized(value: Any) -> Any:
    """``value`` (any JSON) with every secret replaced by ``None``: the values of secret keys (``accountKey``,
    ``instrumentationKey`` …), everything under ``credentials`` and ``secrets`` but key names and Key Vault
    references, and URL query strings. Iterative, so no nesting is too deep for it."""
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any, bool]] = [(value, root, 0, False)]
    while stack:
        item, parent, slot, secret = stack.pop()
        if isinstance(item, dict):
            out: dict[str, Any] = {}
            parent[slot] = out
            for key, child in item.items():
                if _secret_key(key):
                    out[key] = None
                else:
                    inner = secret or key in SECRET_CONTAINERS
                    stack.append((child, out, key, inner))
        elif isinstance(item, list):
            items: list[Any] = [None] * len(item)
            parent[slot] = items
            stack.extend((child, items, index, secret) for index, child in enumerate(item))
        elif isinstance(item, str):
            parent[slot] = _kept_string(item, slot, secret)
        else:
            parent[slot] = None if secret and slot not in _NAME_KEYS else item
    return root[0]


def _secret_key(key: str) -> bool:
    return key.lower() in _SECRET_KEYS_LOWER


def _kept_string(text: str, key: Any, secret: bool) -> Any:
    if secret and key not in _NAME_KEYS:
        return None
    if isinstance(key, str) and key.lower().endswith("url"):
        return without_query(text)
    return text


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
    kept = stored(NodeSetup, setup)  # a record of an older azbai may hold keys or SAS tokens
    shaped = modelled(NodeSetup, kept)
    if kept.get("mountVolumes"):
        shaped["mountVolumes"] = mount_volumes(kept["mountVolumes"])
    return _with_path_suffix(shaped, setup)


def stored_node_setup(setup: dict[str, Any]) -> dict[str, Any]:
    """A cluster's ``nodeSetup`` as it is recorded: what the model knows (no keys, secret values, SAS tokens), and
    the setup task's ``stdOutErrPathSuffix``."""
    from azbai.source.model import NodeSetup

    return _with_path_suffix(stored(NodeSetup, setup) or {}, setup)


def _with_path_suffix(shaped: dict[str, Any], setup: dict[str, Any]) -> dict[str, Any]:
    """``shaped`` with ``setup``'s ``setupTask.stdOutErrPathSuffix``, which the service set (not in the model)."""
    task = setup.get("setupTask")
    if isinstance(task, dict) and shaped.get("setupTask") is not None:
        shaped["setupTask"]["stdOutErrPathSuffix"] = task.get("stdOutErrPathSuffix")
    return shaped
