"""Pipeline step 2: the ParallelRunStep entry script that styles frames, unchanged in Azure ML and locally.

Azure ML calls ``init()`` once per worker process and ``run(mini_batch)`` with a list of frame paths; outputs go to
``$AZUREML_BI_OUTPUT_PATH`` under the same file names. ``--style`` is a style index (0..25) or a blend
``"7:0.5,19:0.5"``; ``--checkpoint`` uses a pytorch/examples TransformerNet instead; ``--threads`` sets torch's
intra-op threads per worker (on a small machine, one thread per worker process is fastest).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Imported here, not in init(): where workers fork from a parent that imported this script (the local engine on
# Linux), they pay for these imports once, not once each. The compiled network is loaded by torch's C++ loader
# (see stylenet.py): neither torch._inductor nor its CPU probe is needed to run it.
import torch
from PIL import Image
from stylenet import Stylizer

_stylizer: Stylizer | None = None
_output: Path | None = None


def parse_style(text: str) -> tuple[int | None, list[float] | None]:
    """``"19"`` → style 19; ``"7:0.5,19:0.5"`` → a 26-weight blend."""
    if ":" not in text:
        return int(text), None
    weights = [0.0] * 26
    for part in text.split(","):
        index, _, weight = part.partition(":")
        weights[int(index)] = float(weight)
    return None, weights


def init() -> None:
    global _stylizer, _output
    parser = argparse.ArgumentParser()
    parser.add_argument("--style", default="19")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--image-size", type=int, default=0, help="0: keep the frames' size")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("STYLE_THREADS", "1")))
    args, _ = parser.parse_known_args()
    torch.set_num_threads(max(1, args.threads))
    size = args.image_size or None
    if args.checkpoint:
        _stylizer = Stylizer.from_checkpoint(args.checkpoint, image_size=size, batch_size=args.batch_size)
    else:
        style, weights = parse_style(args.style)
        _stylizer = Stylizer.pretrained(style, weights=weights, image_size=size, batch_size=args.batch_size)
    _output = Path(os.environ["AZUREML_BI_OUTPUT_PATH"])
    _output.mkdir(parents=True, exist_ok=True)


def run(mini_batch: list[str]) -> list[str]:
    assert _stylizer is not None and _output is not None, "init() was not called"
    frames = [Path(p) for p in mini_batch if p.lower().endswith((".png", ".jpg", ".ppm"))]
    images = []
    for path in frames:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    for path, styled in zip(frames, _stylizer.stylize(images), strict=False):
        temporary = _output / f".{path.name}.tmp"
        # the frames' own format: JPEG stays JPEG on a datastore, uncompressed PPM stays PPM on one machine
        if path.suffix.lower() == ".jpg":
            styled.save(temporary, format="JPEG", quality=95)
        elif path.suffix.lower() == ".ppm":
            styled.save(temporary, format="PPM")
        else:
            styled.save(temporary, format="PNG", compress_level=1)
        os.replace(temporary, _output / path.name)  # a frame is either complete or absent
    done = {p.name for p in frames}
    return [Path(p).name if Path(p).name in done else f"skipped:{Path(p).name}" for p in mini_batch]
