"""How the typed source model declares its JSON schema.

Each model class is a frozen dataclass whose fields carry their JSON name and rules in ``metadata`` (the way
msrest's ``_attribute_map`` does for the Batch AI SDK models). :mod:`azbai.source.reader` walks a decoded JSON
document against these declarations, so the model and its schema are one definition.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any

V2017 = "2017-09-01-preview"
V2018_03 = "2018-03-01"
V2018_05 = "2018-05-01"
ALL_VERSIONS = (V2017, V2018_03, V2018_05)
#: the JSON keys whose values are secrets wherever they appear in a Batch AI object
SECRET_KEYS = frozenset({"accountKey", "password", "adminUserPassword", "sasToken", "instrumentationKey"})
#: the JSON keys under which everything is secret or a credential (but key names and Key Vault references)
SECRET_CONTAINERS = frozenset({"credentials", "secrets"})
#: the largest count Batch AI took (its counts are int32); the walker's bound for any integer field without one
INT32_MAX = 2**31 - 1


class Secret:
    """A value that must never be written anywhere: a storage key, a password, a job secret.

    ``str()`` and ``repr()`` hide it; only :meth:`reveal` gives it back, for the one place that hands it to a
    process environment or an SDK call.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value itself."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


class Kind(enum.Enum):
    """What a string field holds, beyond being a string; used as ``Annotated[str, Kind.X]`` in the models."""

    #: a path that must stay inside its root (``relativeMountPath``, ``pathSuffix``)
    RELATIVE_PATH = "relative path"
    #: an absolute path, or one starting with ``$VAR``, that Batch AI expanded on the node
    ROOTED_PATH = "rooted path"
    #: a string Batch AI expanded with shell semantics on the node, so its ``$VAR`` references are checked
    SHELL = "shell string"
    #: an environment variable name, or an id that becomes part of one (``AZ_BATCHAI_INPUT_<id>``)
    ENV_NAME = "environment variable name"
    #: an ISO-8601 (``P7D``) or .NET (``7.00:00:00``) duration, parsed into a ``timedelta``
    DURATION = "duration"


def spec(
    json: str,
    *,
    required: bool = False,
    default: Any = None,
    enum: tuple[str, ...] | None = None,
    versions: tuple[str, ...] = ALL_VERSIONS,
    secret: bool = False,
    minimum: int | None = None,
    maximum: int | None = None,
    note: str = "",
    factory: Callable[[], Any] | None = None,
) -> Any:
    """Declare one field of a source model class.

    ``required`` is what the Batch AI service and CLI really required, not what the (over-strict) 2018-05-01 JSON
    schema says: the CLI filled ``accountName`` and ``credentials`` itself. ``versions`` lists the schema versions
    that know the key; a key used under a declared version that does not know it is a warning. ``note`` is the
    advice given when that happens.
    """
    metadata = {
        "json": json,
        "required": required,
        "enum": enum,
        "versions": versions,
        "secret": secret,
        "minimum": minimum,
        "maximum": maximum,
        "note": note,
    }
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)
