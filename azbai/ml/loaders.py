"""azure-ai-ml's own loaders, imported lazily, with their errors translated once (into :class:`MlError`).

What runs locally is what ``az ml job create -f`` would send: the YAML goes through ``load_job`` with the
``--set key=value`` overrides as ``params_override``, as the CLI v2 extension does. A schema error keeps
azure-ai-ml's own message: it names the field's YAML path and the file (``"location": "job.yml#line 12"``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from azbai.errors import MlError

log = logging.getLogger(__name__)


def parse_sets(values: Sequence[str]) -> dict[str, str]:
    """``--set key=value`` pairs (the CLI v2 form) as a mapping."""
    pairs = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            raise MlError(f"--set takes key=value, not {value!r}")
        pairs[key.strip()] = text
    return pairs


def overrides(sets: Mapping[str, str]) -> list[dict[str, str]]:
    """``params_override`` as the CLI v2 builds it from ``--set``."""
    return [{key: value} for key, value in sets.items()]


@contextlib.contextmanager
def translated(path: Path, what: str) -> Iterator[None]:
    """Turn azure-ai-ml's and marshmallow's exceptions into :class:`MlError` keeping their message."""
    from azure.ai.ml.exceptions import MlException
    from marshmallow import ValidationError

    try:
        yield
    except (ValidationError, MlException) as exc:
        raise MlError(f"{path}: not a valid {what}:\n{exc}") from exc
    except (OSError, ValueError) as exc:
        raise MlError(f"{path}: cannot read the {what}: {exc}") from exc


def load_job(path: Path, sets: Mapping[str, str] | None = None) -> Any:
    """A command or pipeline job file as azure-ai-ml reads it (``Command`` node or ``PipelineJob``)."""
    path = _existing(path, "job file")
    with _quiet(), translated(path, "job file"):
        from azure.ai.ml import load_job as aml_load_job

        return aml_load_job(path, params_override=overrides(sets or {}))


def load_datastore(path: Path, sets: Mapping[str, str] | None = None) -> Any:
    """A datastore file as azure-ai-ml reads it."""
    path = _existing(path, "datastore file")
    with _quiet(), translated(path, "datastore file"):
        from azure.ai.ml import load_datastore as aml_load_datastore

        return aml_load_datastore(path, params_override=overrides(sets or {}))


def load_compute(path: Path, sets: Mapping[str, str] | None = None) -> Any:
    """A compute file as azure-ai-ml reads it."""
    path = _existing(path, "compute file")
    with _quiet(), translated(path, "compute file"):
        from azure.ai.ml import load_compute as aml_load_compute

        return aml_load_compute(path, params_override=overrides(sets or {}))


def _existing(path: Path, what: str) -> Path:
    path = Path(path).resolve()
    if not path.is_file():
        raise MlError(f"no {what} {path}")
    return path


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """:func:`quiet_azure_ai_ml`, imported when a file is loaded: the v2 target's package is not part of the start-up
    of every ``azbai ml`` command."""
    from azbai.targets.azureml_v2.entities import quiet_azure_ai_ml

    with quiet_azure_ai_ml():
        yield
