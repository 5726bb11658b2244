"""Shared test configuration: the Batch AI corpus, and ``--update-golden`` to regenerate golden files."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent

#: Property tests check properties, not speed (that is the benchmarks' job): on a shared 2-core machine one slow
#: draw or example (a GC pause, another suite's burst) must not fail them. So no deadline and no too_slow health
#: check by default; a test's own ``@settings`` names these again when it sets suppress_health_check itself.
TIMING_HEALTH_CHECKS = [HealthCheck.too_slow]
settings.register_profile("azbai", deadline=None, suppress_health_check=TIMING_HEALTH_CHECKS)
settings.load_profile("azbai")


#: the Batch AI corpus (MIT, from the Azure/BatchAI repository), vendored with its license
CORPUS = Path(__file__).resolve().parent / "data/corpus/batchai"
DATA = Path(__file__).resolve().parent / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite golden files from the current output (review the diff)",
    )


@pytest.fixture(params=["fuse", "mirror"])
def blob_mount(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each way a local job mounts a blob container (``$AZBAI_BLOB_MOUNT``) in turn; FUSE where it can be made."""
    from azbai.local.blobfuse import fuse_unavailable

    if request.param == "fuse" and (reason := fuse_unavailable()) is not None:
        pytest.skip(f"no FUSE mount here: {reason}")
    monkeypatch.setenv("AZBAI_BLOB_MOUNT", request.param)
    return str(request.param)


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
