"""Walk decoded JSON against the model declarations in :mod:`azbai.source.model`.

The walker builds model instances and records every problem it meets (wrong types, missing keys, unknown keys
with a did-you-mean, values out of range, unsafe paths) instead of stopping at the first.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import posixpath
import re
import types
import typing
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, get_args, get_origin

from azbai.source.diagnostics import Collector, describe_value, did_you_mean, join_path
from azbai.source.fields import INT32_MAX, SECRET_CONTAINERS, SECRET_KEYS, Kind, Secret

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ISO_DURATION_RE = re.compile(
    r"^P(?:(?P<days>\d+(?:\.\d+)?)D)?(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)
_DOTNET_DURATION_RE = re.compile(
    r"^(?:(?P<days>\d+)\.)?(?P<hours>\d{1,2}):(?P<minutes>\d{2}):(?P<seconds>\d{2}(?:\.\d+)?)$"
)


class Walker:
    """Builds model instances from JSON, collecting diagnostics.

    ``version`` is the schema version the file declares (None: accept every version's keys).
    """

    def __init__(self, collector: Collector, version: str | None) -> None:
        self.collector = collector
        self.version = version
        self._paths: dict[int, str] = {}
        self._keep: list[object] = []  # ids are only unique while the objects live
        #: JSON paths whose value was present but rejected (so later checks do not also call them missing)
        self.rejected: set[str] = set()

    def path_of(self, instance: object) -> str:
        """The JSON path an instance built by this walker came from."""
        return self._paths[id(instance)]

    def alias(self, new: object, old: object) -> None:
        """Record that ``new`` (a modified copy of ``old``) comes from the same place."""
        self._paths[id(new)] = self._paths[id(old)]
        self._keep.append(new)

    def build(self, cls: type, value: Any, path: str) -> Any:
        """Build an instance of dataclass ``cls`` from ``value``; None when it is not an object."""
        if not isinstance(value, dict):
            self.collector.error(
                path, "wrong-type", f"expected an object, found {self._describe(value, path)}"
            )
            return None
        declared = _fields(cls)
        by_json = {f.metadata["json"]: f for f in declared}
        kwargs: dict[str, Any] = {}
        for key, item in value.items():
            item_path = join_path(path, key)
            field = by_json.get(key)
            if field is None:
                hint = did_you_mean(key, by_json)
                self.collector.warning(
                    item_path, "unknown-key", f"unknown key '{key}' is ignored, as Batch AI ignored it{hint}"
                )
                continue
            versions = field.metadata["versions"]
            if self.version is not None and self.version not in versions:
                note = field.metadata["note"]
                self.collector.warning(
                    item_path,
                    "other-version",
                    f"'{key}' is not part of the {self.version} schema this file declares "
                    f"(known in {', '.join(versions)}); Batch AI ignored it" + (f": {note}" if note else ""),
                )
                continue
            if item is None:
                continue
            parsed = self._value(_hints(cls)[field.name], item, item_path, field.metadata)
            if parsed is _INVALID:
                self.rejected.add(item_path)
            else:
                kwargs[field.name] = parsed
        missing = False
        for field in declared:
            if field.metadata["required"] and field.name not in kwargs:
                json_key = field.metadata["json"]
                if json_key not in value or value[json_key] is None:
                    self.collector.error(
                        join_path(path, json_key), "missing-key", f"required key '{json_key}' is missing"
                    )
                missing = True
        if missing:
            return None
        instance = cls(**kwargs)
        self._paths[id(instance)] = path
        self._keep.append(instance)
        return instance

    def _value(self, hint: Any, value: Any, path: str, meta: Mapping[str, Any]) -> Any:
        kind: Kind | None = None
        if get_origin(hint) is typing.Annotated:
            hint, kind = get_args(hint)[0], get_args(hint)[1]
        origin = get_origin(hint)
        if origin in (typing.Union, types.UnionType):
            options = [a for a in get_args(hint) if a is not type(None)]
            return self._value(options[0], value, path, meta)
        if origin is tuple:
            item_hint = get_args(hint)[0]
            if not isinstance(value, list):
                shown = describe_value(value, secret=bool(meta["secret"]) or is_secret_path(path))
                self.collector.error(path, "wrong-type", f"expected an array, found {shown}")
                return _INVALID
            items = [self._value(item_hint, v, join_path(path, i), meta) for i, v in enumerate(value)]
            return tuple(i for i in items if i is not _INVALID and i is not None)
        if dataclasses.is_dataclass(hint):
            built = self.build(hint, value, path)  # type: ignore[arg-type]
            return _INVALID if built is None else built
        if hint is bool:
            if not isinstance(value, bool):
                self.collector.error(
                    path, "wrong-type", f"expected true or false, found {self._describe(value, path)}"
                )
                return _INVALID
            return value
        if hint is int:
            return self._integer(value, path, meta)
        if hint is Secret:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                # msrest, which read job.json for the Batch AI CLI, converted it with str(); the value stays unsaid
                self.collector.warning(
                    path,
                    "cli-tolerance",
                    f"found {describe_value(value, secret=True)}: the Batch AI CLI converted it to a string, "
                    "and so does azbai (write it in quotes)",
                )
                value = str(value)
            if not isinstance(value, str):
                self.collector.error(
                    path, "wrong-type", f"expected a string, found {describe_value(value, secret=True)}"
                )
                return _INVALID
            return Secret(value)
        if hint is timedelta:
            return self._duration(value, path)
        if hint is str:
            return self._string(value, path, meta, kind)
        raise TypeError(f"unsupported model type {hint!r} at {path}")  # a bug in the model, not user input

    def _describe(self, value: Any, path: str) -> str:
        return describe_value(value, secret=is_secret_path(path))

    def _integer(self, value: Any, path: str, meta: Mapping[str, Any]) -> Any:
        low, high = meta["minimum"], meta["maximum"]
        high = INT32_MAX if high is None else high
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            digits = value.strip().lstrip("-")
            if len(digits.lstrip("0")) > _MAX_DIGITS:
                # int() of thousands of digits is slow, or refused (sys.int_info.str_digits_check_threshold)
                self.collector.error(
                    path,
                    "out-of-range",
                    f"expected an integer{_bounds(low, high)}, found a string of {len(digits)} digits",
                )
                return _INVALID
            # msrest, which read job.json for the Batch AI CLI, converted it with int()
            self.collector.warning(
                path,
                "cli-tolerance",
                f"found {self._describe(value, path)}: the Batch AI CLI converted it to the integer "
                f"{int(value)}, and so does azbai (write it without quotes)",
            )
            value = int(value)
        elif isinstance(value, float) and value.is_integer():
            # msrest converted it with int(): 2.0 became 2
            converted = int(value)
            self.collector.warning(
                path,
                "cli-tolerance",
                f"found the number {_short(value)}: the Batch AI CLI converted it to the integer "
                f"{_short(converted)}, and so does azbai (write it without a fraction)",
            )
            value = converted
        elif isinstance(value, float) and math.isfinite(value):
            self.collector.error(
                path,
                "wrong-type",
                f"expected an integer, found the number {_short(value)} (the Batch AI CLI cut it to "
                f"{_short(int(value))}: write the integer you mean)",
            )
            return _INVALID
        if isinstance(value, bool) or not isinstance(value, int):
            extra = ""
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                extra = f" (write {value.strip()} without quotes)"
            self.collector.error(
                path, "wrong-type", f"expected an integer, found {self._describe(value, path)}{extra}"
            )
            return _INVALID
        if low is not None and value < low:
            self.collector.error(path, "out-of-range", f"expected an integer >= {low}, found {_short(value)}")
            return _INVALID
        if high is not None and value > high:
            self.collector.error(
                path, "out-of-range", f"expected an integer <= {high}, found {_short(value)}"
            )
            return _INVALID
        return value

    def _string(self, value: Any, path: str, meta: Mapping[str, Any], kind: Kind | None) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # msrest, which read job.json for the Batch AI CLI, converted it with str()
            converted = "a string" if is_secret_path(path) else f'the string "{value}"'
            self.collector.warning(
                path,
                "cli-tolerance",
                f"found {self._describe(value, path)}: the Batch AI CLI converted it to {converted}, and so does "
                "azbai (write it in quotes)",
            )
            value = str(value)
        if not isinstance(value, str):
            self.collector.error(
                path, "wrong-type", f"expected a string, found {self._describe(value, path)}"
            )
            return _INVALID
        enum = meta["enum"]
        if enum is not None:
            for allowed in enum:
                if value.lower() == allowed.lower():
                    return allowed
            self.collector.error(
                path,
                "bad-value",
                f"expected one of {', '.join(enum)}, found {self._describe(value, path)}{did_you_mean(value, enum)}",
            )
            return _INVALID
        if meta["required"] and not value.strip():
            self.collector.error(path, "empty", "must not be empty")
            return _INVALID
        if kind is Kind.ENV_NAME and not _ENV_NAME_RE.match(value):
            self.collector.error(
                path,
                "bad-name",
                f"expected letters, digits and '_' (not starting with a digit), found {self._describe(value, path)}: "
                "it becomes part of an environment variable name",
            )
            return _INVALID
        if kind is Kind.RELATIVE_PATH and not self._relative_path_ok(value, path):
            return _INVALID
        if kind is Kind.ROOTED_PATH and not self._rooted_path_ok(value, path):
            return _INVALID
        return value

    def _relative_path_ok(self, value: str, path: str) -> bool:
        if value.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[\\/]", value):
            self.collector.error(
                path,
                "absolute-path",
                f"expected a relative path, found the absolute path {self._describe(value, path)}",
            )
            return False
        normal = posixpath.normpath(value.replace("\\", "/"))
        if normal == ".." or normal.startswith("../"):
            self.collector.error(
                path,
                "escaping-path",
                f"{self._describe(value, path)} escapes the directory it is relative to",
            )
            return False
        if normal == "." and path.endswith("relativeMountPath"):
            self.collector.error(path, "empty", "must name a directory below the mount root, found '.'")
            return False
        return True

    def _rooted_path_ok(self, value: str, path: str) -> bool:
        if not value.startswith(("/", "$")):
            self.collector.error(
                path,
                "relative-path",
                f"expected an absolute path or one starting with a variable such as $AZ_BATCHAI_JOB_MOUNT_ROOT, "
                f"found {self._describe(value, path)}",
            )
            return False
        root, _, rest = value.partition("/")
        if rest:
            normal = posixpath.normpath(rest)
            if normal == ".." or normal.startswith("../"):
                where = root if root.startswith("$") else "/"
                self.collector.error(path, "escaping-path", f"{self._describe(value, path)} escapes {where}")
                return False
        return True

    def _duration(self, value: Any, path: str) -> Any:
        if not isinstance(value, str):
            self.collector.error(
                path,
                "wrong-type",
                f'expected a duration string such as "7.00:00:00" or "PT2H", found {self._describe(value, path)}',
            )
            return _INVALID
        parsed = parse_duration(value)
        if parsed is None:
            self.collector.error(
                path,
                "bad-value",
                f'expected a duration such as "7.00:00:00" (days.hh:mm:ss) or "PT2H" (ISO 8601), '
                f"found {self._describe(value, path)}",
            )
            return _INVALID
        if parsed <= timedelta(0):
            self.collector.error(
                path, "out-of-range", f"expected a positive duration, found {self._describe(value, path)}"
            )
            return _INVALID
        return parsed


_INVALID = object()
#: more digits than any count Batch AI took (int32) is out of range without converting it
_MAX_DIGITS = 30
_SEGMENT_RE = re.compile(r"\[\d+\]")


def is_secret_path(path: str) -> bool:
    """Whether the value at JSON ``path`` is, or is under, a secret: ``credentials``, ``secrets``, a
    ``*SecretReference`` or a secret field (so that a message describes it without quoting it)."""
    for segment in _SEGMENT_RE.sub("", path).split("."):
        if segment in SECRET_CONTAINERS or segment in SECRET_KEYS or segment.endswith("SecretReference"):
            return True
    return False


def _bounds(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f" from {low} to {high}"
    if high is not None:
        return f" <= {high}"
    return f" >= {low}" if low is not None else ""


def _short(number: int | float) -> str:
    """A number for a message: a huge one by its size, never thousands of digits."""
    if isinstance(number, float):
        return repr(number)
    digits = str(abs(number))  # from JSON (at most 4300 digits) or a float (at most 309)
    return digits if len(digits) <= _MAX_DIGITS else f"an integer of {len(digits)} digits"


def parse_duration(text: str) -> timedelta | None:
    """Parse an ISO-8601 (``P7D``, ``PT1H30M``) or .NET (``7.00:00:00``) duration; None when it is neither."""
    text = text.strip()
    for pattern in (_ISO_DURATION_RE, _DOTNET_DURATION_RE):
        match = pattern.match(text)
        if match and text not in ("P", "PT") and not text.endswith("T"):
            parts = {k: float(v) for k, v in match.groupdict().items() if v is not None}
            if pattern is _DOTNET_DURATION_RE and (parts["minutes"] >= 60 or parts["seconds"] >= 60):
                return None
            return timedelta(
                days=parts.get("days", 0),
                hours=parts.get("hours", 0),
                minutes=parts.get("minutes", 0),
                seconds=parts.get("seconds", 0),
            )
    return None


@functools.cache
def _fields(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(cls)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)
