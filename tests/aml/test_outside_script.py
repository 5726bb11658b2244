"""The datastore how-to's calls end to end, in a script outside the repository that imports only ``azbai``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import azbai
from azbai.aml import Workspace
from azbai.local.azurite import Emulator
from azbai.local.workspace import Workspace as LocalWorkspace

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.azurite

SCRIPT = '''
import pathlib
import sys

import azbai

ws = azbai.Workspace()                                   # the only line that differs from Azure ML's how-to
blob = azbai.Datastore.register_azure_blob_container(
    workspace=ws, datastore_name="mnist_data", container_name="mnist", account_name="mystorageacct",
    account_key="not-a-real-key==", create_if_not_exists=True)
share = azbai.Datastore.register_azure_file_share(
    workspace=ws, datastore_name="models", file_share_name="models", account_name="mystorageacct",
    create_if_not_exists=True)
assert sorted(ws.datastores) == ["mnist_data", "models", "workspaceblobstore", "workspacefilestore"]

data = pathlib.Path("data")
for i in range(3):
    (data / "train").mkdir(parents=True, exist_ok=True)
    (data / "train" / f"{i}.txt").write_text(f"digit {i}\\n")
(data / "labels.txt").write_text("0 1 2\\n")
blob.upload(src_dir="data", target_path="mnist", overwrite=True, show_progress=True)
share.upload_files(["data/labels.txt"], target_path="labels", show_progress=False)

pathlib.Path("src").mkdir(exist_ok=True)
pathlib.Path("src/train.py").write_text("""
import argparse, os, pathlib
p = argparse.ArgumentParser()
p.add_argument("--data"); p.add_argument("--labels"); p.add_argument("--out")
a = p.parse_args()
assert a.out == os.environ["AZUREML_DATAREFERENCE_model"]
files = sorted(f.name for f in pathlib.Path(a.data, "train").iterdir())
labels = pathlib.Path(a.labels, "labels.txt").read_text().split()
pathlib.Path(a.out, "model.txt").write_text(f"{len(files)} images, {len(labels)} labels\\\\n")
print("training on", files, flush=True)
""")

est = azbai.Estimator(
    source_directory="src",
    entry_script="train.py",
    script_params={
        "--data": blob.path("mnist").as_mount(),
        "--labels": share.path("labels").as_download(),
        "--out": share.path("trained", data_reference_name="model").as_upload(),
    },
    compute_target="cpu-cluster",
)
run = azbai.Experiment(workspace=ws, name="mnist-howto").submit(est)
details = run.wait_for_completion(show_output=True)
assert details["status"] == run.get_status() == "Completed", details
names = run.get_file_names()
assert "azureml-logs/stdout.txt" in names, names
run.download_file("azureml-logs/stdout.txt", output_file_path="stdout.txt")
assert "training on" in pathlib.Path("stdout.txt").read_text()
assert share.download(target_path="downloaded", prefix="trained", show_progress=False) == 1
print("MODEL", pathlib.Path("downloaded/trained/model.txt").read_text().strip())
try:
    azbai.Datastore.get(ws, "mnist-data")
except azbai.StorageError as exc:
    print("ERROR", exc)
'''


def test_the_how_to_runs_outside_the_repository(tmp_path: Path) -> None:
    assert azbai.Workspace is Workspace  # the public face
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "howto.py").write_text(textwrap.dedent(SCRIPT))
    env = {
        **os.environ,
        "AZBAI_WORKSPACE": str(tmp_path / "ws"),
        "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p),
    }
    try:
        result = subprocess.run(
            [sys.executable, "howto.py"], cwd=folder, env=env, capture_output=True, text=True, timeout=300
        )
    finally:
        Emulator(LocalWorkspace(tmp_path / "ws")).stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MODEL 3 images, 3 labels" in result.stdout
    assert "training on ['0.txt', '1.txt', '2.txt']" in result.stdout  # show_output streamed the log
    assert "ERROR the workspace has no datastore 'mnist-data'" in result.stdout
    assert "did you mean 'mnist_data'?" in result.stdout
    assert not str(folder).startswith(str(ROOT))
    for path in (tmp_path / "ws").rglob("*"):
        if path.is_file() and path.stat().st_size < 1_000_000:
            assert b"not-a-real-key==" not in path.read_bytes(), path
