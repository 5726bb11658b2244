"""``--query`` and ``-o json|jsonc|table|tsv|none``, as the az CLI (knack 0.6) formatted results.

``--query`` is JMESPath over the JSON the command would print (the ``jmespath`` library, as az used); ``json`` is
``json.dumps(indent=2, sort_keys=True)`` (``jsonc`` too: az only coloured it); ``table`` is the command's own table layout (az's table transformer) or,
with ``--query`` or without one, az's automatic table (scalar fields, ``id``/``type``/``etag`` skipped), drawn with
``tabulate``; ``tsv`` is one line per item, a dict's values in key order, nested objects empty and lists as their
length.
"""

from __future__ import annotations

import importlib
import json
from collections import OrderedDict
from collections.abc import Callable
from io import StringIO
from typing import Any

from azbai.errors import AzUsageError


def query(value: Any, expression: str | None) -> Any:
    """``value`` filtered by the JMESPath ``expression`` (unchanged without one)."""
    if not expression:
        return value
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        return jmespath.search(expression, value, jmespath.Options(dict_cls=OrderedDict))
    except JMESPathError as exc:
        first = str(exc).splitlines()[0]
        raise AzUsageError(
            f"az: error: argument --query: invalid jmespath_type value: '{expression}' ({first})"
        ) from None


def render(
    value: Any, output: str, *, queried: bool = False, table: Callable[[Any], Any] | None = None
) -> str:
    """The text az printed for ``value`` (already queried) in ``output`` format; '' for ``none``."""
    if output == "none":
        return ""
    if output in ("json", "jsonc"):
        return json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, separators=(",", ": ")) + "\n"
    if output == "tsv":
        return _tsv(value if isinstance(value, list) else [value])
    if output == "table":
        return _table(value, queried=queried, transformer=table)
    raise AzUsageError(f"az: error: argument --output/-o: invalid choice: '{output}'")


def _table(value: Any, *, queried: bool, transformer: Callable[[Any], Any] | None) -> str:
    # tabulate has no type information; az drew its tables with it
    tabulate: Any = importlib.import_module("tabulate").tabulate

    if transformer is not None and not queried:
        value = transformer(value)
    rows = value if isinstance(value, list) else [value]
    sort_keys = not queried and transformer is None
    data = [_auto_row(row, sort_keys) for row in rows]
    text = tabulate(data, headers="keys", tablefmt="simple", disable_numparse=True) if data else ""
    return text + "\n"


_SKIP_KEYS = ("id", "type", "etag")


def _auto_row(item: Any, sort_keys: bool) -> OrderedDict[str, Any]:
    row: OrderedDict[str, Any] = OrderedDict()
    if isinstance(item, dict):
        keys = sorted(item) if sort_keys else list(item)
        for key in keys:
            if key in _SKIP_KEYS:
                continue
            if item[key] is not None and not isinstance(item[key], (list, dict, set)):
                row[key[0].upper() + key[1:] if key else key] = item[key]
    elif isinstance(item, list):
        for column, cell in enumerate(item):
            row[f"Column{column + 1}"] = cell
    else:
        row["Result"] = item
    return row


def _tsv(rows: list[Any]) -> str:
    out = StringIO()
    for row in rows:
        if isinstance(row, dict):
            cells = (
                list(row.values()) if isinstance(row, OrderedDict) else [v for _, v in sorted(row.items())]
            )
            out.write("\t".join(_tsv_cell(c) for c in cells))
        elif isinstance(row, list):
            out.write("\t".join(_tsv_cell(c) for c in row))
        elif isinstance(row, bool):
            out.write(str(row).lower())
        else:
            out.write(_tsv_cell(row))
        out.write("\n")
    return out.getvalue()


def _tsv_cell(value: Any) -> str:
    if isinstance(value, list):
        return str(len(value))
    if isinstance(value, dict):
        return ""
    return value if isinstance(value, str) else str(value)
