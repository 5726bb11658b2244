"""The plan's deterministic JSON form, and back: ``plan_to_dict`` / ``plan_from_dict`` are a round-trip pair."""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import types
import typing
from typing import Any, TypeVar, get_args, get_origin

from azbai.errors import PlanError
from azbai.plan.model import PLAN_FORMAT, Job, Plan

T = TypeVar("T")


def to_dict(obj: Any) -> Any:
    """A JSON-ready form of a plan object: dataclasses become objects with their field order, enums their values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    return obj


def from_dict(cls: type[T], data: Any) -> T:
    """Rebuild a plan object of type ``cls`` from :func:`to_dict`'s output; :class:`PlanError` when it does not fit."""
    try:
        return _build(cls, data, "$")  # type: ignore[no-any-return, unused-ignore]
    except (TypeError, ValueError, KeyError) as exc:
        raise PlanError(f"not a valid azbai plan: {exc}") from exc


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    """The plan as a dict (``plan.json``)."""
    return to_dict(plan)  # type: ignore[no-any-return, unused-ignore]


def plan_from_dict(data: dict[str, Any]) -> Plan:
    """The inverse of :func:`plan_to_dict`; :class:`PlanError` for another format (an older azbai's plan)."""
    found = data.get("format") if isinstance(data, dict) else None
    if found != PLAN_FORMAT:
        raise PlanError(
            f"not a plan of format {PLAN_FORMAT} (found {found!r}): migrate the job again with this azbai"
        )
    return from_dict(Plan, data)


def plan_from_json(text: str) -> Plan:
    """The inverse of :func:`plan_to_json`."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise PlanError(f"not a plan: invalid JSON ({exc})") from exc
    return plan_from_dict(data)


def plan_to_json(plan: Plan) -> str:
    """The plan as deterministic, indented JSON text ending in a newline."""
    return json.dumps(plan_to_dict(plan), indent=2, ensure_ascii=False) + "\n"


def job_to_json(job: Job) -> str:
    """One job section (what the launcher reads) as JSON text."""
    return json.dumps(to_dict(job), indent=2, ensure_ascii=False) + "\n"


def job_from_json(text: str) -> Job:
    """The inverse of :func:`job_to_json`."""
    return from_dict(Job, json.loads(text))


def _build(hint: Any, data: Any, where: str) -> Any:
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(hint) if a is not type(None)]
        if data is None:
            return None
        if len(options) > 1:  # a union of step classes: the "kind" field says which
            for option in options:
                kind = next((f.default for f in dataclasses.fields(option) if f.name == "kind"), None)
                if isinstance(data, dict) and data.get("kind") == kind:
                    return _build(option, data, where)
            raise TypeError(f"{where}: unknown kind {data.get('kind') if isinstance(data, dict) else data!r}")
        return _build(options[0], data, where)
    if origin is tuple:
        if not isinstance(data, list):
            raise TypeError(f"{where}: expected a list")
        return tuple(_build(get_args(hint)[0], v, f"{where}[{i}]") for i, v in enumerate(data))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(data, dict):
            raise TypeError(f"{where}: expected an object")
        hints = _hints(hint)
        names = {f.name for f in dataclasses.fields(hint)}
        unknown = set(data) - names
        if unknown:
            raise KeyError(f"{where}: unknown keys {sorted(unknown)}")
        return hint(**{k: _build(hints[k], v, f"{where}.{k}") for k, v in data.items()})
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(data)
    if hint in (str, int, bool):
        if not isinstance(data, hint) or (hint is int and isinstance(data, bool)):
            raise TypeError(f"{where}: expected {hint.__name__}")
        return data
    raise TypeError(f"{where}: unsupported type {hint!r}")


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)
