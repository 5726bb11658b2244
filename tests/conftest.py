"""Shared test configuration: the Batch AI corpus, and ``--update-golden`` to regenerate golden files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def find_corpus() -> Path | None:
    """The Batch AI corpus: $AZBAI_CORPUS, else ../shared/corpus/batchai beside the repository, else /work/shared."""
    candidates = [
        os.environ.get("AZBAI_CORPUS"),
        ROOT.parent / "shared/corpus/batchai",
        "/work/shared/corpus/batchai",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "recipes").is_dir():
            return Path(candidate)
    return None


_FOUND = find_corpus()
#: the corpus (not part of the repository); tests that need it are skipped, loudly, when it is not there
CORPUS = _FOUND or ROOT.parent / "shared/corpus/batchai"
DATA = Path(__file__).resolve().parent / "data"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _FOUND is not None:
        return
    skip = pytest.mark.skip(
        reason="the Batch AI corpus (../shared/corpus/batchai or $AZBAI_CORPUS) is not here"
    )
    for item in items:
        if item.get_closest_marker("corpus"):
            item.add_marker(skip)


def pytest_report_header(config: pytest.Config) -> str:
    return f"Batch AI corpus: {_FOUND or 'NOT FOUND (corpus tests are skipped)'}"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite golden files from the current output (review the diff)",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


def corpus_files(kind: str = "job") -> list[Path]:
    """Every config file in the corpus: ``job`` (job configs), ``cluster`` or ``other``."""
    files = sorted(p for p in CORPUS.rglob("*.json") if "schemas" not in p.parts)
    if kind == "cluster":
        return [p for p in files if p.name.endswith(".cluster.json")]
    if kind == "other":
        return [p for p in files if p.name.endswith(".other-properties.json")]
    return [p for p in files if not p.name.endswith((".cluster.json", ".other-properties.json"))]


def corpus_id(path: Path) -> str:
    return str(path.relative_to(CORPUS))
