"""The style-transfer batch-scoring pipeline, run locally end to end and built for Azure ML offline."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import azbai
from azbai.errors import JobFailed
from azbai.local import parallel
from azbai.local.azurite import DEV_ACCOUNT, Emulator
from azbai.local.jobs import JobBook
from azbai.local.pipelines import PipelineRunner
from azbai.local.service import create_job, list_files
from azbai.local.stores import open_store
from azbai.local.trigger import TriggerWatcher
from azbai.local.workspace import Workspace
from azbai.targets.azureml_v1 import build_objects, offline

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "style-transfer"
sys.path.insert(0, str(RECIPE))
from video import frame_paths, make_clip, probe, split  # noqa: E402

pytestmark = [pytest.mark.azurite, pytest.mark.slow]
SCRIPTS = ("split.py", "stitch.py", "video.py", "stylenet.py", "style_batch.py", "style_entry.py")


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    # the workers run the network eagerly: compiling it for each test's frame size would cost more than styling
    monkeypatch.setenv("STYLENET_COMPILE", "0")
    workspace = Workspace(tmp_path / "ws")
    Emulator(workspace).ensure()
    scripts = open_store(workspace, DEV_ACCOUNT, share="scripts")
    for name in SCRIPTS:
        scripts.upload_file(RECIPE / name, f"style-transfer/{name}")
    try:
        yield workspace
    finally:
        Emulator(workspace).stop()


def small_plan(tmp_path: Path, mini_batch: int = 4) -> tuple[object, Path]:
    """The recipe's pipeline at a test size: the same files, a smaller frame and mini-batch."""
    spec = json.loads((RECIPE / "pipeline.json").read_text())
    spec["steps"][1]["parallel"]["miniBatchSize"] = mini_batch
    spec["steps"][1]["parallel"]["sourceDirectory"] = str(RECIPE)
    folder = tmp_path / "spec"
    folder.mkdir()
    for name in ("split.job.json", "stitch.job.json"):
        (folder / name).write_text((RECIPE / name).read_text())
    (folder / "pipeline.json").write_text(json.dumps(spec))
    plan = azbai.load(folder / "pipeline.json")
    return plan, folder


def test_a_new_video_fires_the_pipeline_and_comes_back_styled(workspace: Workspace, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "clip.mp4", seconds=0.5, fps=24, size=(64, 64))
    source = probe(clip)
    plan, folder = small_plan(tmp_path)
    watcher = TriggerWatcher(workspace, plan, folder)
    media = open_store(workspace, DEV_ACCOUNT, container="media")
    media.upload_file(clip, "incoming/clip.mp4")
    media.write_bytes("incoming/notes.txt", b"not a video: the pattern is *.mp4\n")
    (fired,) = watcher.poll()
    assert fired.run is not None and fired.run.state == "succeeded", fired.error
    run = fired.run
    frames = sorted(p.name for p in run.data_dir("frames").iterdir())
    styled = sorted(p.name for p in run.data_dir("styled").iterdir() if not p.name.startswith("."))
    # locally the frames go uncompressed from step to step (split.py --format)
    assert frames == styled == [f"{i:05d}.ppm" for i in range(1, source.frames + 1)]  # every frame, once
    (video,) = [e for e in media.list("processed/") if e.path.endswith("clip_styled.mp4")]
    media.download_file(video.path, tmp_path / "out.mp4")
    out = probe(tmp_path / "out.mp4")
    assert (out.frames, out.fps, out.width, out.height) == (
        source.frames,
        source.fps,
        source.width,
        source.height,
    )
    assert out.audio_codec == "aac"
    # the frames are styled, not copied
    from PIL import Image, ImageChops, ImageStat

    with (
        Image.open(run.data_dir("frames") / "00001.ppm") as a,
        Image.open(run.data_dir("styled") / "00001.ppm") as b,
    ):
        assert sum(ImageStat.Stat(ImageChops.difference(a.convert("RGB"), b.convert("RGB"))).mean) / 3 > 20
    assert watcher.poll() == []  # not run twice
    # the style step's fork server was started while the split step ran, and nothing of it is left
    (log,) = (run.path / "steps" / "style" / "logs").rglob("stdout-0.txt")
    if parallel._ForkServer.usable() and hasattr(os, "pidfd_open"):
        assert "started ahead of the step, which imported the entry script" in log.read_text()
    assert not [p for p in Path("/proc").glob("[0-9]*") if _is_warm_server_of_ours(p)], (
        "a fork server started ahead of a step outlived its run"
    )
    # the watcher's zygote stays for the next run, with nothing it forked still running; closing the watcher ends it
    zygotes = watcher.pool.pids()
    assert all(not _live_children(zygote) for zygote in zygotes)
    watcher.close()
    assert not any(Path(f"/proc/{zygote}").exists() for zygote in zygotes)


def _live_children(pid: int) -> list[int]:
    import psutil

    return [c.pid for c in psutil.Process(pid).children() if c.status() != psutil.STATUS_ZOMBIE]


def test_a_failing_split_leaves_no_fork_server_started_for_the_style_step(
    workspace: Workspace, tmp_path: Path
) -> None:
    media = open_store(workspace, DEV_ACCOUNT, container="media")
    media.write_bytes("incoming/broken.mp4", b"not a video at all\n")
    plan, folder = small_plan(tmp_path)
    with pytest.raises(JobFailed, match="step 'split'"):
        PipelineRunner(workspace, plan, folder).run({"video": "incoming/broken.mp4"})
    assert not [p for p in Path("/proc").glob("[0-9]*") if _is_warm_server_of_ours(p)]


def _is_warm_server_of_ours(proc: Path) -> bool:
    try:
        stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        return int(stat[1]) == os.getpid() and b"_warm_server_main" in (proc / "cmdline").read_bytes()
    except (OSError, IndexError, ValueError):
        return False


def test_frames_between_local_steps_skip_jpeg_and_match_the_azure_ml_form(
    workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import numpy as np
    from PIL import Image
    from stylenet import Stylizer

    clip = make_clip(tmp_path / "clip.mp4", seconds=0.5, fps=24, size=(64, 64))
    count = probe(clip).frames
    media = open_store(workspace, DEV_ACCOUNT, container="media")
    media.upload_file(clip, "incoming/handoff.mp4")
    plan, folder = small_plan(tmp_path)
    local = PipelineRunner(workspace, plan, folder, reuse=False).run({"video": "incoming/handoff.mp4"})
    monkeypatch.setenv("AZBAI_PIPELINE_DATA_LOCAL", "0")  # the steps as on Azure ML: JPEG frames
    azure = PipelineRunner(workspace, plan, folder, reuse=False).run({"video": "incoming/handoff.mp4"})

    def pictures(run: object, name: str, suffix: str) -> list[np.ndarray]:
        paths = sorted(run.data_dir(name).iterdir())  # type: ignore[attr-defined]
        assert [p.name for p in paths] == [
            f"{i:05d}.{suffix}" for i in range(1, count + 1)
        ]  # each frame once
        return [np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) for p in paths]

    frames = pictures(local, "frames", "ppm")
    styled, styled_jpeg = pictures(local, "styled", "ppm"), pictures(azure, "styled", "jpg")
    # the uncompressed path is the network's own output: within the float32 reference's bound (test_style_fast)
    reference = Stylizer.pretrained(19, image_size=None, batch_size=4, fast=False)
    want = [
        np.asarray(i, dtype=np.float64)
        for i in reference.stylize([Image.fromarray(f.astype(np.uint8)) for f in frames])
    ]

    def psnr(got: np.ndarray, expected: np.ndarray) -> float:
        mse = float(np.mean((got - expected) ** 2))
        return float("inf") if mse == 0 else 10 * float(np.log10(255**2 / mse))

    uncompressed = min(psnr(g, w) for g, w in zip(styled, want, strict=True))
    jpeg = min(psnr(g, w) for g, w in zip(styled_jpeg, want, strict=True))
    print(
        f"worst frame against the reference: {uncompressed:.1f} dB uncompressed, {jpeg:.1f} dB through JPEG"
    )
    assert uncompressed >= 40.0
    # the JPEG path: the same pictures, less exactly (two lossy encodes, amplified by the network)
    assert 15.0 < jpeg < uncompressed
    videos = [e.path for e in media.list("processed/") if e.path.endswith("handoff_styled.mp4")]
    assert len(videos) == 2
    for index, path in enumerate(videos):
        media.download_file(path, tmp_path / f"out-{index}.mp4")
        assert probe(tmp_path / f"out-{index}.mp4").frames == count


def test_a_rerun_after_a_crash_styles_only_the_missing_frames(workspace: Workspace, tmp_path: Path) -> None:
    # 256² frames: a mini-batch takes long enough that the kill lands while most of them are still to do
    clip = make_clip(tmp_path / "clip.mp4", seconds=1.0, fps=24, size=(256, 256))
    media = open_store(workspace, DEV_ACCOUNT, container="media")
    media.upload_file(clip, "incoming/crash.mp4")
    plan, folder = small_plan(tmp_path, mini_batch=2)
    # run the pipeline in another process and kill it while the parallel step is half done
    code = (
        "import sys; from pathlib import Path\n"
        "from azbai.local.pipelines import PipelineRunner; from azbai.local.workspace import Workspace\n"
        "import azbai\n"
        f"plan = azbai.load({str(folder / 'pipeline.json')!r})\n"
        f"PipelineRunner(Workspace(Path({str(workspace.root)!r})), plan, Path({str(folder)!r})).run("
        "{'video': 'incoming/crash.mp4'}, run_id='first')\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    state_root = workspace.pipelines_dir / plan.name / "parallel"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        done = list(state_root.glob("*/state/done/*.json"))
        if done:
            break
        time.sleep(0.02)
    import os

    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    (work,) = list(state_root.iterdir())
    state = work / "state"
    done_before = len(list((state / "done").glob("*.json")))
    assert 1 <= done_before < 12, done_before  # 24 frames in mini-batches of 2: 12 mini-batches
    run = PipelineRunner(workspace, plan, folder).run({"video": "incoming/crash.mp4"}, run_id="second")
    assert run.state == "succeeded"
    record = JobBook(workspace).get(run.steps["style"].job or "")
    logs = "".join(
        (Path(record.stdouterr_dir or "") / f.name).read_text()
        for f in list_files(record)
        if f.name.startswith("stdout-")
    )
    already = [int(n) for n in re.findall(r"(\d+) already done", logs)]
    assert already and min(already) >= done_before  # the rerun did not redo what was done
    assert not state_root.exists() or not list(state_root.iterdir())  # the progress went with the run
    done = sorted((run.path / "steps" / "style" / "parallel" / "state" / "done").glob("*.json"))
    items = [item for path in done for item in json.loads(path.read_text())["items"]]
    assert len(done) == 12 and len(items) == len(set(items)) == 24  # every frame exactly once


def test_the_azure_ml_pipeline_and_its_schedule(tmp_path: Path) -> None:
    result = azbai.migrate(RECIPE / "pipeline.json", tmp_path / "out", storage_account="mystorage")
    summary = offline.summarize(
        build_objects(result.plan, account_name="mystorage", base_dir=RECIPE, directory=tmp_path / "b")
    )
    split_step, style, stitch = summary["pipeline"]
    assert (split_step["name"], style["name"], stitch["name"]) == ("split", "style", "stitch")
    assert "--scoring_module_name" in style["arguments"] and "style_entry.py" in style["arguments"]
    assert style["inputs"] == {"frames": {"mode": "mount", "path_on_compute": None}} and style["outputs"] == [
        "styled"
    ]
    assert set(stitch["inputs"]) >= {"styled", "meta"}
    assert summary["schedule"]["data_path_parameter_name"] == "video"
    assert summary["schedule"]["path_on_datastore"] == "incoming"
    assert (tmp_path / "out/snapshot/style/style_entry.py").is_file()
    assert (tmp_path / "out/snapshot/style/stylenet.py").is_file()
    text = (tmp_path / "out/pipeline.py").read_text()
    assert "ParallelRunStep(" in text and "Schedule.create(" in text and "error_threshold=0" in text


def test_the_batch_ai_job_for_one_batch_of_frames(workspace: Workspace, tmp_path: Path) -> None:
    """The reference's per-batch Batch AI job: a cluster-level blobfuse mount, input directories, a custom toolkit."""
    clip = make_clip(tmp_path / "clip.mp4", seconds=0.5, fps=24, size=(64, 64))
    split(clip, tmp_path / "frames")
    media = open_store(workspace, DEV_ACCOUNT, container="media")
    for path in frame_paths(tmp_path / "frames"):
        media.upload_file(path, f"clip/{path.name}")
    for name in ("style_batch.py", "stylenet.py", "style_entry.py"):
        media.upload_file(RECIPE / name, f"scripts/{name}")
    plan = azbai.load(RECIPE / "batch.job.json", cluster=RECIPE / "cluster.json")
    record = create_job(workspace, plan, name="job0", wait=True)
    assert record.state == "succeeded"
    styled = sorted(e.path for e in media.list("output_clip/"))
    assert styled == [
        f"output_clip/{i:05d}.png" for i in range(1, 9)
    ]  # the 8 frames of its content-image list
    log = media.read_bytes("log_clip/job0.log").decode()
    assert "Images to process: 8" in log and "Average Time" in log
