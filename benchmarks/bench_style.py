"""``style_frames_per_s`` and ``style_overhead_ratio``: the style-transfer network, and the whole pipeline around it.

``style_frames_per_s``: steady-state frames per second of the 26-style network on 256² frames, in-process (the best
of 1 and 2 torch threads, batch 4; median of timed batches after a warm-up). ``style_overhead_ratio``: the wall time
of the local pipeline run a new video triggers (upload, split, the parallel style step, stitch, staging) divided by
the pure model time for the same frames measured in the same run (frames ÷ the steady rate). Medians over rounds.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "style-transfer"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = float(os.environ.get("BENCH_STYLE_SECONDS", "12"))


def _steady_rate(frames: list, threads: int) -> float:  # type: ignore[type-arg]
    import torch
    from stylenet import Stylizer

    torch.set_num_threads(threads)
    stylizer = Stylizer.pretrained(19, image_size=None, batch_size=4)
    stylizer.stylize(frames[:4])  # warm-up
    timings = []
    for start in range(0, min(len(frames), 28), 4):
        began = time.perf_counter()
        stylizer.stylize(frames[start : start + 4])
        timings.append((time.perf_counter() - began) / 4)
    return 1.0 / statistics.median(timings)


def run() -> dict[str, float]:
    sys.path.insert(0, str(RECIPE))
    import torch
    from PIL import Image
    from video import frame_paths, make_clip, split

    import azbai
    from azbai.local.azurite import DEV_ACCOUNT, Emulator
    from azbai.local.stores import open_store
    from azbai.local.trigger import TriggerWatcher
    from azbai.local.workspace import Workspace

    threads = torch.get_num_threads()
    rates, ratios, walls = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clip = make_clip(root / "clip.mp4", seconds=SECONDS, fps=24, size=(256, 256))
        split(clip, root / "frames")
        frames = [Image.open(p).convert("RGB") for p in frame_paths(root / "frames")]
        workspace = Workspace(root / "ws").ensure()
        Emulator(workspace).ensure()
        try:
            scripts = open_store(workspace, DEV_ACCOUNT, share="scripts")
            for name in ("split.py", "stitch.py", "video.py", "stylenet.py"):
                scripts.upload_file(RECIPE / name, f"style-transfer/{name}")
            plan = azbai.load(RECIPE / "pipeline.json")
            media = open_store(workspace, DEV_ACCOUNT, container="media")
            for index in range(ROUNDS):
                rate = max(_steady_rate(frames, 1), _steady_rate(frames, threads))
                torch.set_num_threads(threads)
                rates.append(rate)
                watcher = TriggerWatcher(workspace, plan, RECIPE, reuse=False)
                watcher.poll(skip_existing=True)
                began = time.perf_counter()
                media.upload_file(clip, f"incoming/bench{index}.mp4")
                (fired,) = watcher.poll()
                walls.append(time.perf_counter() - began)
                if fired.run is None or fired.run.state != "succeeded":
                    raise RuntimeError(f"the pipeline failed: {fired.error}")
                ratios.append(walls[-1] / (len(frames) / rate))
        finally:
            Emulator(workspace).stop()
    return {
        "style_frames_per_s": statistics.median(rates),
        "style_overhead_ratio": statistics.median(ratios),
        "style_pipeline_seconds": statistics.median(walls),
        "style_frames": float(len(frames)),
    }
