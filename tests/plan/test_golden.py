"""Golden pairs: each recipe's job.json → plan.json, pipeline.py and MIGRATION.md (``pytest --update-golden``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import azbai
from azbai.facade import render_files
from azbai.plan.serialize import plan_from_dict, plan_to_dict
from tests.conftest import CORPUS, DATA

RECIPES = sorted((CORPUS / "recipes").rglob("*.json"))
CLUSTER = CORPUS / "doc-examples/documentation/using-azure-cli-20/block31.cluster.json"
GOLDEN = DATA / "golden"
FILES = ("plan.json", "pipeline.py", "MIGRATION.md")


def golden_name(path: Path) -> str:
    relative = path.relative_to(CORPUS / "recipes")
    return "-".join([*relative.parent.parts[1:], relative.stem]).lower()


def check(name: str, rendered: dict[str, str], update: bool) -> None:
    folder = GOLDEN / name
    for file in FILES:
        expected = folder / file
        if update:
            folder.mkdir(parents=True, exist_ok=True)
            expected.write_text(rendered[file])
        assert rendered[file] == expected.read_text(), f"{name}/{file} differs from the golden file"


@pytest.mark.parametrize("path", RECIPES, ids=golden_name)
def test_recipe_golden(path: Path, update_golden: bool) -> None:
    plan = azbai.load(path)
    assert plan_from_dict(plan_to_dict(plan)) == plan
    check(golden_name(path), render_files(plan), update_golden)


def test_recipe_with_a_cluster_and_a_storage_account_golden(update_golden: bool) -> None:
    """The 2017 style: paths under a cluster mount, described by a cluster.json (doc example) and --mount."""
    job = CORPUS / "doc-examples/documentation/using-azure-cli-20/block55.job.json"
    plan = azbai.load(
        job,
        cluster=CLUSTER,
        mounts=["external=afs://mystorage/external"],
        storage_account="mystorage",
        inputs="download",
        name="cntk-external",
    )
    check("with-cluster", render_files(plan), update_golden)


def test_generated_code_is_formatted() -> None:
    """Every golden pipeline.py passes ``ruff format --check`` as a person's code would (azbai's line length)."""
    from ruff.__main__ import find_ruff_bin

    files = sorted(GOLDEN.glob("*/pipeline.py"))
    assert len(files) >= len(RECIPES)
    done = subprocess.run(
        [find_ruff_bin(), "format", "--check", "--isolated", "--line-length=110", *map(str, files)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
