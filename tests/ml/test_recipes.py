"""Both recipes through their migrated ``v2/`` files on the local Azure ML engine, end to end: the MNIST job (few
epochs here; ``make demo-v2`` runs the full one) and the style-transfer pipeline (every frame, the source's rate and
its audio)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

import azbai
from azbai.local.azurite import DEV_ACCOUNT
from azbai.local.stores import open_store
from azbai.local.workspace import Workspace
from azbai.ml.runs import RunBook
from tests.ml.conftest import register, run_v2

pytestmark = [pytest.mark.azurite, pytest.mark.slow]
RECIPES = Path(__file__).resolve().parents[2] / "recipes"
STYLE = RECIPES / "style-transfer"
MNIST = RECIPES / "cntk-mnist"
STYLE_SCRIPTS = ("split.py", "stitch.py", "video.py", "stylenet.py", "style_batch.py", "style_entry.py")


def test_the_mnist_job_yml_trains_and_reports_its_test_error(
    ml_workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("mnist_prepare_data", MNIST / "prepare_data.py")
    assert spec is not None and spec.loader is not None
    prepare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prepare)
    prepare.prepare(tmp_path / "mnist_cntk")
    from azbai.local import transfer

    transfer.upload(
        tmp_path / "mnist_cntk", open_store(ml_workspace, DEV_ACCOUNT, container="data"), "mnist_cntk"
    )
    open_store(ml_workspace, DEV_ACCOUNT, share="scripts").upload_file(
        MNIST / "ConvNet_MNIST.py", "cntk/ConvNet_MNIST.py"
    )
    azbai.migrate(MNIST / "job.json", tmp_path / "out", target="v2")
    register(ml_workspace, tmp_path / "out/v2")
    monkeypatch.setenv("CONVNET_MNIST_EPOCHS", "1")
    monkeypatch.setenv("CONVNET_MNIST_EPOCH_SIZE", "2000")
    run = run_v2(ml_workspace, tmp_path / "out/v2/job.yml")
    log = (run.logs_dir / "std_log.txt").read_text()
    final = re.findall(r"Final Results: Minibatch\[1-\d+\]: errs = (\d+\.\d\d)% \* 1000", log)
    assert len(final) == 1 and float(final[0]) < 90.0  # better than chance after one short epoch
    model = open_store(ml_workspace, DEV_ACCOUNT, share="logs")
    uri = run.outputs["output_model"]["uri"]
    prefix = uri.split("/paths/", 1)[1]
    assert [e.path.rsplit("/", 1)[1] for e in model.list(prefix + "/")] == ["ConvNet_MNIST_0.pt"]


def test_the_style_pipeline_yml_styles_every_frame_and_keeps_rate_and_audio(
    ml_workspace: Workspace, tmp_path: Path
) -> None:
    sys.path.insert(0, str(STYLE))
    try:
        from video import make_clip, probe
    finally:
        sys.path.remove(str(STYLE))
    spec = json.loads((STYLE / "pipeline.json").read_text())
    spec["steps"][1]["parallel"]["miniBatchSize"] = 4
    spec["steps"][1]["parallel"]["sourceDirectory"] = str(STYLE)
    folder = tmp_path / "spec"
    folder.mkdir()
    for name in ("split.job.json", "stitch.job.json"):
        (folder / name).write_text((STYLE / name).read_text())
    (folder / "pipeline.json").write_text(json.dumps(spec))
    azbai.migrate(folder / "pipeline.json", tmp_path / "out", target="v2")
    register(ml_workspace, tmp_path / "out/v2")
    scripts = open_store(ml_workspace, DEV_ACCOUNT, share="scripts")
    for name in STYLE_SCRIPTS:
        scripts.upload_file(STYLE / name, f"style-transfer/{name}")
    clip = make_clip(tmp_path / "clip.mp4", seconds=0.5, fps=24, size=(64, 64))
    source = probe(clip)
    media = open_store(ml_workspace, DEV_ACCOUNT, container="media")
    media.upload_file(clip, "incoming/clip.mp4")
    run = run_v2(ml_workspace, tmp_path / "out/v2/pipeline.yml")
    book = RunBook(ml_workspace)
    stitch = book.get(run.children["stitch"])
    prefix = stitch.outputs["output_video"]["uri"].split("/paths/", 1)[1]
    (video,) = [e for e in media.list(prefix + "/") if e.path.endswith("clip_styled.mp4")]
    media.download_file(video.path, tmp_path / "styled.mp4")
    out = probe(tmp_path / "styled.mp4")
    assert (out.frames, out.fps, out.width, out.height) == (
        source.frames,
        source.fps,
        source.width,
        source.height,
    )
    assert out.audio_codec == "aac"
    style = book.get(run.children["style"])
    summary = json.loads((style.path / "parallel_state/summary.json").read_text())
    assert summary["done_items"] == source.frames and summary["failed_items"] == []
