"""A written ``v2/`` folder → azure-ai-ml entities, built offline and checked with azure-ai-ml itself.

:func:`build_entities` imports the folder's own ``submit.py`` and calls its ``validate()`` and ``build()``: the very
code ``python v2/submit.py --dry-run`` runs. :func:`check_entities` then holds the entities to azure-ai-ml's offline
oracle: the entity's own ``_validate()``, the conversion to its REST object, and a dump → load round trip that must
give the same entity. :func:`check_files` looks for the traps a dump can hide: an ``inputs`` value that is a
stringified dict, an absolute ``code:`` path, credentials in a file. azure-ai-ml is imported lazily, here only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import re
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from azbai.errors import TargetError
from azbai.fsutil import write_tree
from azbai.plan.model import Plan

_CREDENTIAL_WORDS = re.compile(r"(?m)^\s*(credentials|account_key|sas_token|client_secret)\s*:")
_ABSOLUTE_CODE = re.compile(r"(?m)^\s*code:\s*[\"']?(/|[A-Za-z]:\\)")


def v2_folder(directory: str | Path) -> Path:
    """The folder holding ``submit.py``: ``directory`` itself, or its ``v2/``."""
    folder = Path(directory)
    if not (folder / "submit.py").is_file() and (folder / "v2" / "submit.py").is_file():
        folder = folder / "v2"
    if not (folder / "submit.py").is_file():
        raise TargetError(f"{directory} holds no v2/submit.py: run azbai migrate --target v2 first")
    return folder


def load_submit_module(directory: str | Path) -> ModuleType:
    """Import a generated ``submit.py`` as a module (under a unique name, so several can coexist)."""
    path = v2_folder(directory) / "submit.py"
    name = f"azbai_v2_submit_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def build_entities(
    directory: str | Path, *, account_name: str | None = None, check: bool = True
) -> dict[str, Any]:
    """The azure-ai-ml entities of a written ``v2/`` folder (or of the migration folder holding it), offline.

    Returns ``{"job": Command | PipelineJob, "datastores": {name: entity}, "computes": {name: AmlCompute},
    "schedule": JobSchedule | None, "module": the imported submit.py}``. Raises :class:`TargetError` with every
    problem when azure-ai-ml's validation fails; with ``check`` also when the oracle of :func:`check_entities` or
    :func:`check_files` finds one. Nothing contacts Azure and no credential is needed.
    """
    folder = v2_folder(directory)
    with quiet_azure_ai_ml():
        module = load_submit_module(folder)
        entities = _checked_entities(module, folder, account_name, check)
    entities["module"] = module
    return entities


@contextlib.contextmanager
def quiet_azure_ai_ml() -> Iterator[None]:
    """azure-ai-ml logs a line per experimental class it loads; they are not the user's business."""
    loggers = [logging.getLogger(n) for n in ("azure.ai.ml", "azure.ai.ml._utils._experimental")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _checked_entities(
    module: ModuleType, folder: Path, account_name: str | None, check: bool
) -> dict[str, Any]:
    try:
        problems = list(module.validate())
        entities: dict[str, Any] = module.build(account_name=account_name or module.ACCOUNT_PLACEHOLDER)
        if check:
            problems += check_entities(entities, folder) + check_files(folder)
    except TargetError:
        raise
    except Exception as exc:  # azure-ai-ml raises ValidationError, ValidationException, marshmallow errors...
        lines = explain(str(exc))
        raise TargetError(
            f"azure-ai-ml refused {folder} ({type(exc).__name__}):\n  - " + "\n  - ".join(lines)
        ) from exc
    if problems:
        raise TargetError(
            f"{folder}: azure-ai-ml found {len(problems)} problem(s):\n  - " + "\n  - ".join(problems)
        )
    return entities


def explain(message: str) -> list[str]:
    """azure-ai-ml's message as ``path: problem`` lines (its schema errors nest JSON in JSON; this unpacks them)."""
    start = message.find("{")
    while start != -1:
        try:
            found, _ = json.JSONDecoder().raw_decode(message[start:])
        except ValueError:
            start = message.find("{", start + 1)
            continue
        if isinstance(found, dict):
            errors = found.get("errors")
            if isinstance(errors, list):  # validate results: each error's message may hold the schema's dict
                return [
                    line for e in errors if isinstance(e, dict) for line in explain(str(e.get("message", "")))
                ]
            return _flatten(found, "") or [message.splitlines()[0]]
        start = message.find("{", start + 1)
    return [message.strip().splitlines()[0] if message.strip() else "no message"]


def _flatten(node: Any, path: str) -> list[str]:
    if isinstance(node, dict):
        lines = []
        for key, value in node.items():
            # marshmallow nests dict values under "value" and schema-level errors under "_schema"
            here = path if key in ("value", "_schema") else (f"{path}.{key}" if path else str(key))
            lines += _flatten(value, here)
        return lines
    if isinstance(node, list) and node:
        if all(isinstance(v, str) for v in node):
            return [f"{path or '*'}: {'; '.join(node)}"]
        return _flatten(node[0], path)  # a union field: its first alternative says what was expected
    if isinstance(node, str):
        return [f"{path or '*'}: {node}"]
    return []


def plan_entities(
    plan: Plan,
    *,
    directory: str | Path | None = None,
    base_dir: str | Path | None = None,
    account_name: str | None = None,
) -> dict[str, Any]:
    """The azure-ai-ml entities of ``plan``, built offline: its ``v2/`` files written, then :func:`build_entities`.

    ``directory`` keeps the written files (default: a temporary directory); ``base_dir`` is where a pipeline
    file's relative paths start. For notebooks and tests: the same entities ``python v2/submit.py`` submits.
    """
    from azbai.targets.azureml_v2.files import render_files

    target = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="azbai-v2-"))
    try:
        write_tree(target, render_files(plan, Path(base_dir) if base_dir else None))
    except OSError as exc:
        raise TargetError(f"cannot write {target}: {exc.strerror or exc}") from exc
    return build_entities(target, account_name=account_name)


def as_job(entity: Any) -> Any:
    """A loaded ``type: command`` file is a ``Command`` node; its job form is what is validated and sent."""
    return entity._to_job() if hasattr(entity, "_to_job") else entity


def check_entities(entities: dict[str, Any], folder: Path) -> list[str]:
    """azure-ai-ml's offline oracle on each entity: ``_validate()``, REST conversion, dump → load → equal."""
    from azure.ai.ml import load_compute, load_datastore, load_job

    problems: list[str] = []
    job = as_job(entities["job"])
    result = job._validate()
    if result is not None and not result.passed:
        problems.append(f"{job.type} job: {result.error_messages}")
    try:
        job._to_rest_object()
    except Exception as exc:  # what cannot be sent (trap: an Input(type=integer) on a job)
        problems.append(f"{job.type} job: no REST form: {exc}")
    absolute_code(job, folder)
    back = as_job(load_job(_dumped(job), relative_origin=str(folder / "job.yml")))
    absolute_code(back, folder)
    if comparable(job) != comparable(back):
        problems.append(f"{job.type} job: dump → load differs")
    for name, store in entities["datastores"].items():
        if comparable(load_datastore(_dumped(store))) != comparable(store):
            problems.append(f"datastore {name}: dump → load differs")
    for name, compute in entities["computes"].items():
        if comparable(load_compute(_dumped(compute))) != comparable(compute):
            problems.append(f"compute {name}: dump → load differs")
    schedule = entities.get("schedule")
    if schedule is not None:
        result = schedule._validate()
        if result is not None and not result.passed:
            problems.append(f"schedule: {result.error_messages}")
    return problems


def _dumped(entity: Any) -> io.StringIO:
    stream = io.StringIO()
    entity.dump(stream)
    stream.seek(0)
    return stream


def absolute_code(job: Any, folder: Path) -> None:
    """Make every local ``code`` absolute, resolved from its own file (a dump resolves it against the cwd)."""
    if job.type == "pipeline":
        for node in job.jobs.values():
            component = node.component
            task = getattr(component, "task", None)
            owner = task if task is not None else component
            code = getattr(owner, "code", None)
            if isinstance(code, str) and not code.startswith("azureml:") and not Path(code).is_absolute():
                owner.code = str((folder / "components" / code).resolve())
        return
    if isinstance(job.code, str) and not job.code.startswith("azureml:") and not Path(job.code).is_absolute():
        job.code = str((folder / job.code).resolve())


def comparable(entity: Any) -> Any:
    """An entity's dict form without what a reload renames (inline components become anonymous)."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: plain(v) for k, v in value.items() if k not in ("name", "version") or not _anonymous(value)
            }
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value if isinstance(value, str | int | float | bool | type(None)) else str(value)

    return plain(entity._to_dict())


def _anonymous(mapping: dict[str, Any]) -> bool:
    # an inline component: named by the file on the way in, azureml_anonymous on the way back
    return "command" in mapping or "task" in mapping


def check_files(folder: Path) -> list[str]:
    """The traps of the written files: stringified dicts as input values, absolute code paths, credentials."""
    import yaml  # type: ignore[import-untyped, unused-ignore]  # PyYAML comes with azure-ai-ml

    problems = []
    for path in sorted(folder.rglob("*.yml")):
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(folder).as_posix()
        if _ABSOLUTE_CODE.search(text):
            problems.append(f"{where}: an absolute code: path")
        if _CREDENTIAL_WORDS.search(text):
            problems.append(f"{where}: credentials in the file")
        for key, value in _inputs(yaml.safe_load(text)):
            if isinstance(value, str) and value.lstrip().startswith("{"):
                problems.append(f"{where}: {key} is a stringified dict: {value[:40]}")
    return problems


def _inputs(document: Any, prefix: str = "") -> list[tuple[str, Any]]:
    found = []
    if isinstance(document, dict):
        for key, value in document.items():
            here = f"{prefix}.{key}" if prefix else str(key)
            if key == "inputs" and isinstance(value, dict):
                found += [(f"{here}.{k}", v) for k, v in value.items()]
            found += _inputs(value, here)
    return found
