"""Turning the bytes of a config file into JSON values, with line-and-column errors and the schema it declares."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from azbai.source.diagnostics import Collector, Diagnostic, Severity, describe_value, join_path
from azbai.source.fields import ALL_VERSIONS

_SCHEMA_RE = re.compile(
    r"schemas/(?P<version>\d{4}-\d{2}-\d{2}(?:-preview)?)/(?P<kind>[A-Za-z0-9_<> -]+)\.json"
)

#: schema file names that describe a job (one per toolkit, plus the generic one)
JOB_SCHEMA_KINDS = frozenset(
    {"job", "cntk", "tensorflow", "pytorch", "caffe", "caffe2", "chainer", "custom", "horovod", "mpi"}
)


@dataclass(frozen=True)
class Decoded:
    """A decoded config: its ``properties`` object, whether it was wrapped, and the schema it declares."""

    properties: Any
    wrapped: bool
    schema_url: str | None
    schema_version: str | None
    schema_kind: str | None


#: what :func:`decode_json` returns for text that is not JSON (``None`` is a valid JSON value)
UNPARSEABLE = object()


def decode_json(text: str, collector: Collector) -> Any:
    """Parse JSON text. Problems go to ``collector`` (with line and column); :data:`UNPARSEABLE` when it is not JSON.

    Duplicate keys are a warning (Python's ``json``, like the Batch AI CLI, keeps the last one); ``NaN`` and
    ``Infinity`` are errors (they are not JSON).
    """
    duplicates: list[str] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                duplicates.append(key)
            seen[key] = value
        return seen

    def reject_constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        value = json.loads(text, object_pairs_hook=pairs_hook, parse_constant=reject_constant)
    except json.JSONDecodeError as exc:
        message = f"invalid JSON: {exc.msg}"
        before = text[: exc.pos].rstrip()
        if before.endswith(",") and exc.msg.startswith(("Expecting property name", "Expecting value")):
            message += " (a trailing comma before this point?)"
        collector.add(Diagnostic("", "invalid-json", message, Severity.ERROR, exc.lineno, exc.colno))
        return UNPARSEABLE
    except ValueError as exc:
        collector.error("", "invalid-json", f"invalid JSON: {exc}")
        return UNPARSEABLE
    except RecursionError:
        collector.error("", "invalid-json", "invalid JSON: nested too deeply")
        return UNPARSEABLE
    for key in dict.fromkeys(duplicates):
        collector.warning("", "duplicate-key", f"key '{key}' appears more than once; the last value is used")
    deep = _too_deep(value)
    if deep is not None:
        collector.error(
            deep,
            "too-deep",
            f"nested more than {MAX_DEPTH} levels deep here: no Batch AI job, cluster or pipeline file is; "
            "the file is not read",
        )
        return UNPARSEABLE
    return value


#: how deeply objects and arrays may nest in a config file (Batch AI's own schemas nest about 8 levels)
MAX_DEPTH = 64


def _too_deep(value: Any) -> str | None:
    """The JSON path (its first levels) of a value nested deeper than :data:`MAX_DEPTH`, or None.

    Iterative, so that no nesting overflows the stack here or in what reads the value after (merges, copies).
    """
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        if depth >= MAX_DEPTH:
            return path
        children = item.items() if isinstance(item, dict) else enumerate(item)
        for key, child in children:
            # below the third level the path stays where the deep part starts, not 64 levels of it
            stack.append((child, join_path(path, key) if depth < 3 else path, depth + 1))
    return None


def unwrap(value: Any, collector: Collector, *, what: str) -> Decoded | None:
    """Find the ``properties`` object (with or without the ``{"properties": …}`` wrapper) and the ``$schema``."""
    if not isinstance(value, dict):
        collector.error(
            "",
            "wrong-type",
            f"expected a JSON object with the {what}'s properties, found {describe_value(value)}",
        )
        return None
    schema_url = value.get("$schema")
    if schema_url is not None and not isinstance(schema_url, str):
        collector.error(
            "$schema", "wrong-type", f"expected a string (the schema URL), found {describe_value(schema_url)}"
        )
        schema_url = None
    version = kind = None
    if schema_url is not None:
        match = _SCHEMA_RE.search(schema_url)
        if match and match["version"] in ALL_VERSIONS:
            version, kind = match["version"], match["kind"]
        else:
            collector.warning(
                "$schema",
                "unknown-schema",
                f"'{schema_url}' is not a Batch AI schema azbai knows "
                f"({', '.join(ALL_VERSIONS)}); checking against all of them",
            )
    wrapped = isinstance(value.get("properties"), dict)
    if wrapped:
        for key in value:
            if key not in ("properties", "$schema"):
                collector.warning(key, "unknown-key", f"unknown key '{key}' beside 'properties' is ignored")
        properties = value["properties"]
    elif "properties" in value:
        collector.error(
            "properties", "wrong-type", f"expected an object, found {describe_value(value['properties'])}"
        )
        return None
    else:
        properties = {k: v for k, v in value.items() if k != "$schema"}
    return Decoded(properties, wrapped, schema_url, version, kind)
