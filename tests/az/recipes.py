"""The command sequences of the corpus recipes' ``cli-instructions.md``, as written, with their example outputs."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import CORPUS

INSTRUCTIONS = sorted((CORPUS / "cli-instructions").glob("*.md"))
#: what a user types for the recipes' placeholders
FILL = {
    "<storage account name>": "azbairecipes",
    "<user_name>": "recipeuser",
    "<password>": "Pa55w0rd-never-written",
}
_FENCE = re.compile(r"^```(\w*)(.*)$")


@dataclass
class Step:
    """One command of a recipe: its words, and what the recipe shows the real CLI printed (when it does)."""

    line: str
    argv: list[str]
    example: Any = None
    downloads: dict[str, str] = field(default_factory=dict)


def recipe_dir(md: Path) -> Path:
    """``CNTK__CNTK-GPU-Python.md`` → the corpus recipe directory."""
    return CORPUS / "recipes" / md.stem.replace("__", "/")


def steps(md: Path) -> list[Step]:
    """The ``az`` commands of a recipe, in order; ``wget -O job.json URL`` lines are kept as downloads."""
    lines = md.read_text(encoding="utf-8").splitlines()
    out: list[Step] = []
    pending: dict[str, str] = {}
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i].strip())
        if not match:
            i += 1
            continue
        kind = match.group(1)
        before = " ".join(lines[max(0, i - 3) : i]).lower()
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        text = "\n".join(body).strip()
        if "example output" in before and out and text.startswith(("{", "[", '"')):
            try:
                out[-1].example = json.loads(text)
            except ValueError:
                out[-1].example = text  # an abridged example ("...")
            continue
        if kind not in ("azurecli", "sh", "bash", "") or "for windows users" in before:
            continue  # the Windows variant of the block before it: a user runs one of the two
        for raw in body:
            line = raw.strip()
            for placeholder, value in FILL.items():
                line = line.replace(placeholder, value)
            if line.startswith("wget -O ") and line.split()[2].endswith(".json"):
                pending[line.split()[2]] = line.split()[3]
            if line.startswith("az "):
                out.append(Step(line, shlex.split(line)[1:], downloads=pending))
                pending = {}
    return out


def job_file_for(md: Path, url: str | None) -> Path:
    """The corpus job.json a recipe's ``wget -O job.json URL`` fetched (default: the recipe's job.json)."""
    if url and "/recipes/" in url:
        return CORPUS / "recipes" / url.split("/recipes/", 1)[1]
    return recipe_dir(md) / "job.json"


def missing_fields(expected: Any, actual: Any, path: str = "") -> list[str]:
    """The field names of ``expected`` that ``actual`` lacks (values may differ; a null may be an object)."""
    problems: list[str] = []
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [] if actual is None else [f"{path or '.'}: an object, found {type(actual).__name__}"]
        for key, value in expected.items():
            if key not in actual:
                problems.append(f"{path}.{key}")
            else:
                problems += missing_fields(value, actual[key], f"{path}.{key}")
    elif (
        isinstance(expected, list)
        and expected
        and isinstance(expected[0], dict)
        and isinstance(actual, list)
        and actual
    ):
        problems += missing_fields(expected[0], actual[0], f"{path}[0]")
    return problems


MANUAL = CORPUS / "documentation" / "using-azure-cli-20.md"


def manual_example(command: str) -> Any:
    """The JSON example output the Batch AI CLI manual shows after ``$ <command>`` (its first words)."""
    lines = MANUAL.read_text(encoding="utf-8").splitlines()
    start = next(
        i
        for i, line in enumerate(lines)
        if line.split()[:2] == ["$", "az"] and line[2:].split() == command.split()
    )
    i = start + 1
    while not lines[i].startswith("```") or not lines[i + 1].lstrip().startswith(("{", "[")):
        i += 1
    body = []
    i += 1
    while not lines[i].startswith("```"):
        body.append(lines[i])
        i += 1
    return json.loads("\n".join(body))
