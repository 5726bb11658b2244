"""The notebooks run, top to bottom, with small parameters, against the embedded default."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import azbai
from azbai.aml import Workspace as AmlWorkspace
from azbai.local.azurite import Emulator
from azbai.local.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.azurite, pytest.mark.slow]


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    workspace = Workspace(tmp_path / "ws")
    monkeypatch.setenv("AZBAI_WORKSPACE", str(workspace.root))
    monkeypatch.chdir(tmp_path)
    try:
        yield workspace
    finally:
        Emulator(workspace).stop()


def execute(name: str, parameters: str, cwd: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    (cell,) = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    cell.source = parameters
    client = NotebookClient(
        notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute()
    return notebook


def outputs(notebook: nbformat.NotebookNode) -> str:
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", "") or str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(texts)


def test_the_mnist_notebook(workspace: Workspace, tmp_path: Path) -> None:
    notebook = execute(
        "01-cntk-mnist.ipynb", 'EPOCHS = 2\nEPOCH_SIZE = 2000\nEXPERIMENT = "notebook-test"\n', tmp_path
    )
    text = outputs(notebook)
    assert "Completed 0" in text
    assert "Finished Epoch[2 of 2]" in text  # streamed by wait_for_completion(show_output=True)
    assert "test error" in text and "checkpoints" in text
    assert (tmp_path / "out" / "mnist_training_curve.png").stat().st_size > 1000
    assert "Pipeline step 'cntk-mnist'" in text  # the SDK v1 objects
    assert "v2/job.yml" in text and "Command {" in text  # the SDK v2 files and entity
    assert os.environ.get("AZBAI_WORKSPACE") == str(workspace.root)


def test_the_style_transfer_notebook(workspace: Workspace, tmp_path: Path) -> None:
    notebook = execute(
        "02-style-transfer.ipynb", 'SECONDS = 0.5\nSIZE = 64\nSTYLE = "7:0.5,19:0.5"\n', tmp_path
    )
    text = outputs(notebook)
    assert (
        "succeeded" in text
        and "Pipeline step 'style'" in text
        and "Schedule 'style-transfer-trigger'" in text
    )
    assert (tmp_path / "out" / "before_after.png").stat().st_size > 1000
    assert list((tmp_path / "out" / "processed").rglob("notebook-clip_styled.mp4"))
    assert "v2/pipeline.yml" in text and "'style': 'Parallel'" in text


def test_the_datastores_notebook(workspace: Workspace, tmp_path: Path) -> None:
    assert azbai.Workspace is AmlWorkspace  # the notebook uses only the public face
    notebook = execute("00-datastores.ipynb", 'N_IMAGES = 5\nEXPERIMENT = "datastores-test"\n', tmp_path)
    text = outputs(notebook)
    assert "mnist_data           AzureBlob  mystorageacct/mnist" in text
    assert "downloaded 5 files back; identical: True" in text
    assert "upload mnist_data: 100%" in text  # the progress bar, in Jupyter
    assert "5 images, 5 labels, 3 epochs" in text and "status: Completed" in text
    assert "(= $AZUREML_DATAREFERENCE_images: True)" in text
    assert "outputs/metrics.json" in text and '"images": 5' in text
    assert "written back to the blob mount: 1 file" in text
    assert "azureml.train.estimator" in text and "Estimator" in text
    assert "images  mount     mnist_data:mnist/images" in text
    assert "model   upload    models:model  on compute: outputs/model" in text
    assert "did you mean 'mnist_data'?" in text and "offline: nothing is submitted" in text
    assert (workspace.root / "aml" / "datastores.json").is_file()
    assert "<your account key>" not in (workspace.root / "aml" / "datastores.json").read_text()


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")))
def test_notebooks_use_only_the_public_api(name: str) -> None:
    """A notebook imports ``azbai`` and nothing under it: the public face is the whole API."""
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    assert "import azbai" in code
    assert not re.search(r"^\s*(from azbai\.|import azbai\.|from azbai import)", code, flags=re.M), name
