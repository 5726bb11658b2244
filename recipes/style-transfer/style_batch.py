"""Style one batch of frames, with the command line of the Batch AI reference's ``style_transfer_script.py``.

The Batch AI architecture ("batch scoring of deep learning models") created one job per 50 frames, each running::

    python $AZ_BATCHAI_INPUT_SCRIPT/style_transfer_script.py --style-image … --content-image-dir $AZ_BATCHAI_INPUT_CONTENT_IMGS
        --content-image-list 00001.jpg,00002.jpg,… --output-image-dir $AZ_BATCHAI_INPUT_OUTPUT_IMGS
        --log-path $AZ_BATCHAI_INPUT_LOGGER --log-file <job name>

The reference optimised each frame against a VGG-19 (Gatys et al.), whose weights no package ships; this script
applies the pretrained feed-forward network instead (``--style`` index or blend), with the same arguments and logs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from logging.handlers import RotatingFileHandler
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--style", default="19", help="a style index 0..25 or a blend such as 7:0.5,19:0.5")
    parser.add_argument("--content-image-dir", required=True, type=Path)
    parser.add_argument(
        "--content-image-list", default=None, help="comma-separated file names (default: all)"
    )
    parser.add_argument("--output-image-dir", required=True, type=Path)
    parser.add_argument("--image-size", type=int, default=0, help="0: keep each frame's size")
    parser.add_argument("--log-path", type=Path, default=None)
    parser.add_argument("--log-file", default="style_transfer_script")
    args = parser.parse_args(argv)

    log = logging.getLogger("style_batch")
    log.setLevel(logging.INFO)
    formatter = logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if args.log_path is not None:
        args.log_path.mkdir(parents=True, exist_ok=True)
        handlers.append(RotatingFileHandler(args.log_path / f"{args.log_file}.log", maxBytes=20000))
    for handler in handlers:
        handler.setFormatter(formatter)
        log.addHandler(handler)

    if args.content_image_list:  # the reference crashed when the list was missing; here it means "all"
        names = [n.strip() for n in args.content_image_list.split(",") if n.strip()]
    else:
        names = sorted(
            p.name for p in args.content_image_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")
        )
    missing = [
        n for n in names if not (args.content_image_dir / n).is_file() or "/" in n or n.startswith(".")
    ]
    if missing:
        log.error("content images not found in %s: %s", args.content_image_dir, ", ".join(missing[:5]))
        return 1
    log.info("Images to process: %d", len(names))

    import torch
    from PIL import Image
    from style_entry import parse_style
    from stylenet import Stylizer

    torch.set_num_threads(max(1, torch.get_num_threads()))
    started = time.perf_counter()
    style, weights = parse_style(args.style)
    stylizer = Stylizer.pretrained(style, weights=weights, image_size=args.image_size or None)
    log.info("Time to load the style network: %.2f s (style %s)", time.perf_counter() - started, args.style)
    args.output_image_dir.mkdir(parents=True, exist_ok=True)
    batch_started = time.perf_counter()
    for name in names:
        log.info("Running Style Transfer on %s", name)
        with Image.open(args.content_image_dir / name) as image:
            (styled,) = stylizer.stylize([image.convert("RGB")])
        styled.save(args.output_image_dir / name)
    total = time.perf_counter() - batch_started
    log.info("Total time for the batch: %.2f s", total)
    log.info(
        "Average Time (in seconds) to apply style-transfer to each image: %.3f", total / max(1, len(names))
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
