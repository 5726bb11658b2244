"""Pipeline step 1: split a video into numbered frames and its audio (no re-encode), at its true frame rate.

    python split.py --video IN.mp4 --frames FRAMES_DIR --meta META_DIR

``FRAMES_DIR`` receives only ``00001.jpg``... (``.ppm`` in a local pipeline run, see ``--format``; only frames, so
the parallel step's input is exactly the frames); ``META_DIR`` receives ``video.json`` (frame rate, count, size) and
``audio.m4a``, which the stitch step needs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from video import DEFAULT_AUDIO_NAME, MANIFEST_NAME, VideoError, split

#: set to 1 by azbai's local pipeline engine: what a step writes for later steps stays on this machine
LOCAL_DATA_ENV = "AZBAI_PIPELINE_DATA_LOCAL"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", required=True, type=Path, help="the video file (or a folder holding one)")
    parser.add_argument("--frames", required=True, type=Path, help="where the frames go")
    parser.add_argument("--meta", required=True, type=Path, help="where video.json and the audio go")
    parser.add_argument(
        "--format",
        default=None,
        choices=("jpg", "png", "ppm"),
        help="frame format: jpg as the reference (the default), png lossless, ppm uncompressed; by default ppm "
        f"where ${LOCAL_DATA_ENV}=1 (the local engine: the frames stay on this machine)",
    )
    args = parser.parse_args(argv)
    # Between steps on one machine, JPEG costs an encode here and a decode in the style step, for nothing: the
    # bytes never cross a network. The Azure ML form keeps JPEG, small on the datastore.
    image_format = args.format or ("ppm" if os.environ.get(LOCAL_DATA_ENV) == "1" else "jpg")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    video = args.video
    if video.is_dir():
        candidates = sorted(
            p for p in video.iterdir() if p.suffix.lower() in (".mp4", ".mov", ".mkv", ".avi")
        )
        if len(candidates) != 1:
            print(f"error: expected one video in {video}, found {len(candidates)}", file=sys.stderr)
            return 2
        video = candidates[0]
    args.meta.mkdir(parents=True, exist_ok=True)
    try:
        info = split(video, args.frames, audio_path=args.meta / DEFAULT_AUDIO_NAME, image_format=image_format)
    except VideoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    manifest = json.loads((args.frames / MANIFEST_NAME).read_text())
    manifest["audio"] = DEFAULT_AUDIO_NAME if manifest.get("audio") else None
    (args.meta / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    (args.frames / MANIFEST_NAME).unlink()
    print(
        f"split {video.name}: {info.frames} frames at {info.fps} fps, {info.width}x{info.height}, audio {info.audio_codec}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
