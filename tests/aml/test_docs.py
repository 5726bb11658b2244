"""The code of docs/api.md's section "Azure ML's datastore and estimator API" runs as written, block after block."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

import azbai
from azbai.aml import Workspace
from azbai.local.azurite import Emulator
from azbai.local.workspace import Workspace as LocalWorkspace
from tests.conftest import DATA

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Azure ML's datastore and estimator API"
pytestmark = pytest.mark.azurite


def blocks() -> list[str]:
    """The ```python blocks of the section, in order."""
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start : end if end != -1 else len(text)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty directory with the small pipeline of tests/data, and a workspace of its own."""
    shutil.copytree(DATA / "pipeline", tmp_path / "pipeline")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AZBAI_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.delenv("AZURE_BATCHAI_STORAGE_ACCOUNT", raising=False)
    try:
        yield tmp_path
    finally:
        Emulator(LocalWorkspace(tmp_path / "ws")).stop()


def test_the_section_has_examples() -> None:
    code = blocks()
    assert len(code) >= 8 and "import azbai" in code[0]


def test_the_examples_run(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert azbai.Workspace is Workspace  # the examples use the public face
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for number, code in enumerate(blocks(), 1):
        try:
            exec(compile(code, f"docs/api.md block {number}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"block {number} failed: {exc!r}\n{code}") from exc
    out = capsys.readouterr().out
    assert "workspaceblobstore" in out
    assert "$AZUREML_DATAREFERENCE_mnist mount download upload" in out
    assert "trained on ['0.txt', '1.txt', '2.txt']" in out and "3 images, 2 epochs" in out
    assert "['Completed', 'Completed']" in out and "drops/new.txt succeeded" in out
    assert "Estimator ['--data', '$AZUREML_DATAREFERENCE_mnist'" in out
    assert "model upload models trained outputs/model" in out
    for expected in ("did you mean 'mnist_data'?", "must be relative", "mode 'copy' is not one of",
                     "it is not a directory", "offline: nothing is submitted"):  # fmt: skip
        assert expected in out, expected
    assert (folder / "metrics.json").read_text() == '{"accuracy": 0.99}'
