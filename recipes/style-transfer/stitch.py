"""Pipeline step 3: stitch the styled frames back into an mp4 at the source's frame rate, with its audio.

    python stitch.py --frames STYLED_DIR --meta META_DIR --output OUT_DIR

Every frame from 00001 to the last must be there: a missing frame is an error, never a silent gap.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from video import MANIFEST_NAME, VideoError, read_manifest, stitch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", required=True, type=Path, help="the styled frames")
    parser.add_argument(
        "--meta", required=True, type=Path, help="video.json and the audio from the split step"
    )
    parser.add_argument("--output", required=True, type=Path, help="where the video goes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        info, audio = read_manifest(args.meta)
        source = json.loads((args.meta / MANIFEST_NAME).read_text()).get("source") or "video.mp4"
        out = stitch(args.frames, args.output / f"{Path(source).stem}_styled.mp4", info.fps, audio)
    except VideoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"stitched {info.frames} frames at {info.fps} fps into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
