"""``make demo-style``: the style-transfer batch-scoring pipeline, end to end on the embedded default.

1. builds a short clip with an audio track from photos that ship with scikit-image;
2. uploads the step scripts to the ``scripts`` share and the clip to ``media/incoming/`` — where the trigger looks;
3. polls the trigger once, which starts the pipeline for the new video: split → style (parallel) → stitch;
4. downloads the styled video and writes a before/after contact sheet.

    python recipes/style-transfer/demo.py [--seconds 3] [--size 256] [--style 19] [--out out/style-transfer]
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

import av
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from video import contact_sheet, make_clip, probe  # noqa: E402

import azbai  # noqa: E402
from azbai.local.azurite import DEV_ACCOUNT  # noqa: E402
from azbai.local.stores import open_store  # noqa: E402
from azbai.local.trigger import TriggerWatcher  # noqa: E402
from azbai.local.workspace import Workspace  # noqa: E402

STEP_SCRIPTS = ("split.py", "stitch.py", "video.py", "stylenet.py")


def sample_frames(path: Path, indices: list[int]) -> list[Image.Image]:
    """Decode the frames at ``indices`` (0-based) of a video."""
    wanted, found = set(indices), {}
    with av.open(str(path)) as container:
        for number, frame in enumerate(container.decode(video=0)):
            if number in wanted:
                found[number] = frame.to_image()
    return [found[i] for i in indices]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--fps", type=int, default=24)
    parser.add_argument("--size", type=int, default=256, help="frame width and height")
    parser.add_argument("--style", default="19", help="a style index 0..25 or a blend such as 7:0.5,19:0.5")
    parser.add_argument("--name", default="clip", help="the video's name in storage")
    parser.add_argument("--out", type=Path, default=Path("out/style-transfer"))
    parser.add_argument("--workspace", default=None, help="the local workspace (default ./.azbai)")
    args = parser.parse_args(argv)
    workspace = Workspace.resolve(args.workspace).ensure()
    args.out.mkdir(parents=True, exist_ok=True)

    source = make_clip(
        args.out / f"{args.name}.mp4", seconds=args.seconds, fps=args.fps, size=(args.size, args.size)
    )
    info = probe(source)
    print(
        f"source: {source} ({info.frames} frames, {info.fps} fps, {info.width}x{info.height}, audio {info.audio_codec})"
    )

    scripts = open_store(workspace, DEV_ACCOUNT, share="scripts")
    for name in STEP_SCRIPTS:
        scripts.upload_file(HERE / name, f"style-transfer/{name}")
    plan = azbai.load(HERE / "pipeline.json")
    plan = _with_style(plan, args.style)
    watcher = TriggerWatcher(workspace, plan, HERE)
    watcher.poll(skip_existing=True)  # like a new Azure ML schedule: only what arrives from now on
    media = open_store(workspace, DEV_ACCOUNT, container="media")
    # a new name each time: the clip is byte-identical on every run, and the trigger fires for new blobs only
    blob_name = f"{args.name}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"
    media.upload_file(source, f"incoming/{blob_name}.mp4")
    print(f"uploaded {media.url_for(f'incoming/{blob_name}.mp4')}: the trigger fires")

    started = time.perf_counter()
    fired = watcher.poll(on_fired=lambda f: print(f"trigger: {f.blob} → pipeline run", flush=True))
    if not fired or fired[0].run is None:
        print(
            f"error: the pipeline did not run: {fired[0].error if fired else 'no trigger fired'}",
            file=sys.stderr,
        )
        return 1
    run = fired[0].run
    print(f"pipeline run {run.run_id} {run.state} in {time.perf_counter() - started:.1f} s")
    for step, state in run.steps.items():
        print(f"  {step}: {state.state} (job {state.job})")

    produced = [e for e in media.list("processed/") if e.path.endswith(f"{blob_name}_styled.mp4")]
    latest = max(produced, key=lambda e: e.path.count("/") and e.path)
    output = args.out / f"{args.name}_styled.mp4"
    media.download_file(latest.path, output)
    styled = probe(output)
    print(f"output: {output} ({styled.frames} frames, {styled.fps} fps, audio {styled.audio_codec})")
    if (styled.frames, styled.fps) != (info.frames, info.fps) or styled.audio_codec is None:
        print("error: the output does not match the source's frame count, rate and audio", file=sys.stderr)
        return 1
    picks = [round(i * (info.frames - 1) / 3) for i in range(4)]
    sheet = contact_sheet(
        list(zip(sample_frames(source, picks), sample_frames(output, picks), strict=False)),
        args.out / "contact_sheet.png",
        labels=[f"frame {i + 1}" for i in picks],
    )
    print(f"contact sheet: {sheet}")
    return 0


def _with_style(plan, style: str):  # type: ignore[no-untyped-def]
    """The plan with the style parameter's default set (what a run of the published pipeline would pass)."""
    import dataclasses

    parameters = tuple(
        dataclasses.replace(p, default=style) if p.name == "style" else p for p in plan.parameters
    )
    return dataclasses.replace(plan, parameters=parameters)


if __name__ == "__main__":
    sys.exit(main())
