"""Tests of recipes/style-transfer/video.py: test clip, probe, split, stitch and the contact sheet."""

from __future__ import annotations

import importlib.util
import io
import itertools
import json
import sys
from fractions import Fraction
from pathlib import Path
from types import ModuleType

import av
import numpy as np
import pytest
from PIL import Image

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "style-transfer"


def _load(name: str) -> ModuleType:
    """Import a recipe module by path: the recipe folder has a dash in its name and is not a package."""
    key = f"style_transfer_recipe_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, RECIPE / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


video = _load("video")


def _audio_packets(path: Path) -> list[tuple[bytes, int | None, int | None]]:
    with av.open(str(path)) as container:
        return [(bytes(p), p.pts, p.dts) for p in container.demux(audio=0) if p.dts is not None]


def _decoded_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return video.make_clip(tmp_path / "clip.mp4", seconds=1.0, fps=24, size=(64, 64))


def test_make_clip_has_exact_frames_rate_and_audio(clip: Path) -> None:
    info = video.probe(clip)
    assert info.frames == 24
    assert info.fps == Fraction(24, 1) and isinstance(info.fps, Fraction)
    assert (info.width, info.height) == (64, 64)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert info.duration == pytest.approx(1.0, abs=0.05)
    frames = _decoded_frames(clip)
    # it moves: consecutive frames differ, and the photos change over the clip
    assert all(np.abs(a.astype(int) - b).mean() > 0.1 for a, b in itertools.pairwise(frames))
    assert np.abs(frames[0].astype(int) - frames[-1]).mean() > 20


def test_make_clip_is_deterministic(clip: Path, tmp_path: Path) -> None:
    again = video.make_clip(tmp_path / "again.mp4", seconds=1.0, fps=24, size=(64, 64))
    assert _audio_packets(again) == _audio_packets(clip)
    # x264 is usually bit-exact too, but under heavy CPU contention a macroblock decision can differ
    first, second = np.stack(_decoded_frames(clip)), np.stack(_decoded_frames(again))
    assert first.shape == second.shape
    assert np.abs(first.astype(int) - second).mean() < 0.5


def test_split_writes_numbered_pngs_audio_copy_and_manifest(clip: Path, tmp_path: Path) -> None:
    frames_dir = tmp_path / "frames"
    info = video.split(clip, frames_dir)
    assert info.frames == 24 and info.fps == Fraction(24, 1)
    assert sorted(p.name for p in frames_dir.glob("*.png")) == [f"{n:05d}.png" for n in range(1, 25)]
    with Image.open(frames_dir / "00001.png") as first:
        assert first.size == (64, 64) and first.mode == "RGB"
    # stream copy: the very same AAC packets, timestamps (incl. the encoder-delay packet) unchanged
    audio = frames_dir / "audio.m4a"
    assert _audio_packets(audio) == _audio_packets(clip)
    manifest = json.loads((frames_dir / "video.json").read_text())
    assert manifest["fps"] == "24/1" and manifest["frames"] == 24 and manifest["audio"] == "audio.m4a"
    assert (manifest["width"], manifest["height"]) == (64, 64)
    assert video.read_manifest(frames_dir) == (info, audio)


def test_split_refuses_raw_aac_and_a_used_folder(clip: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1024 samples"):
        video.split(clip, tmp_path / "frames", audio_path=tmp_path / "audio.aac")
    video.split(clip, tmp_path / "frames")
    with pytest.raises(ValueError, match="already holds numbered frames"):
        video.split(clip, tmp_path / "frames")


def test_stitch_round_trip_keeps_frames_rate_and_audio(clip: Path, tmp_path: Path) -> None:
    frames_dir = tmp_path / "frames"
    info = video.split(clip, frames_dir)
    out = video.stitch(frames_dir, tmp_path / "out.mp4", info.fps, frames_dir / "audio.m4a")
    stitched = video.probe(out)
    assert (stitched.frames, stitched.fps, stitched.audio_codec) == (24, Fraction(24, 1), "aac")
    assert _audio_packets(out) == _audio_packets(clip)
    # each decoded frame is near its own PNG (crf 20 and 4:2:0 chroma on 64 px photos: ~2-5 levels)
    pngs = [np.asarray(Image.open(p)) for p in video.frame_paths(frames_dir)]
    errors = [np.abs(a.astype(int) - b).mean() for a, b in zip(_decoded_frames(out), pngs, strict=True)]
    assert max(errors) < 8.0


def test_ppm_frames_are_the_png_frames_byte_for_byte_as_pil_writes_them(clip: Path, tmp_path: Path) -> None:
    video.split(clip, tmp_path / "png", image_format="png")
    video.split(clip, tmp_path / "ppm", image_format="ppm")
    pngs, ppms = video.frame_paths(tmp_path / "png"), video.frame_paths(tmp_path / "ppm")
    assert [p.stem for p in ppms] == [p.stem for p in pngs] and len(ppms) == 24
    for png, ppm in zip(pngs, ppms, strict=True):
        pixels = np.asarray(Image.open(png))
        written = io.BytesIO()
        Image.fromarray(pixels).save(written, format="PPM")
        assert ppm.read_bytes() == written.getvalue()  # the very file PIL would write
        assert np.array_equal(video._read_ppm(ppm), pixels)
    # the stitched videos agree too (x264 may differ by a macroblock decision under CPU contention)
    fps = Fraction(24)
    from_png = np.stack(_decoded_frames(video.stitch(tmp_path / "png", tmp_path / "png.mp4", fps)))
    from_ppm = np.stack(_decoded_frames(video.stitch(tmp_path / "ppm", tmp_path / "ppm.mp4", fps)))
    assert from_png.shape == from_ppm.shape and np.abs(from_png.astype(int) - from_ppm).mean() < 0.5


def test_ppm_reader_takes_comments_and_leaves_other_ppms_to_pil(tmp_path: Path) -> None:
    pixels = np.arange(5 * 3 * 3, dtype=np.uint8).reshape(3, 5, 3)
    commented = tmp_path / "00001.ppm"
    commented.write_bytes(b"P6 # made by hand\n5\t3\n# maxval next\n255\n" + pixels.tobytes())
    assert np.array_equal(video._read_ppm(commented), pixels)
    with Image.open(commented) as image:  # PIL agrees on what the file holds
        assert np.array_equal(np.asarray(image), pixels)
    ascii_ppm = tmp_path / "ascii.ppm"
    ascii_ppm.write_bytes(b"P3\n1 1\n255\n1 2 3\n")
    truncated = tmp_path / "truncated.ppm"
    truncated.write_bytes(commented.read_bytes()[:-1])
    assert video._read_ppm(ascii_ppm) is None and video._read_ppm(truncated) is None
    # a stitch over such frames reads them with PIL, and a frame of another size is still named
    (tmp_path / "00002.ppm").write_bytes(b"P3\n5 3\n255\n" + b"7 8 9\n" * 15)
    out = video.stitch(tmp_path, tmp_path / "out.mp4", Fraction(24))
    assert video.probe(out).frames == 2
    (tmp_path / "00003.ppm").write_bytes(b"P6\n3 5\n255\n" + pixels.tobytes())
    with pytest.raises(ValueError, match=r"00003\.ppm is 3x5, the first frame 5x3"):
        video.stitch(tmp_path, tmp_path / "again.mp4", Fraction(24))


def test_stitch_keeps_order_a_fractional_rate_and_pads_odd_sizes(tmp_path: Path) -> None:
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    # written out of order, so that a directory-listing order would show
    colours = {n: (20 * n, 255 - 20 * n, 128) for n in (7, 2, 11, 1, 5, 3, 10, 4, 9, 6, 8)}
    for n, colour in colours.items():
        Image.new("RGB", (33, 35), colour).save(frames_dir / f"{n:05d}.png")
    out = video.stitch(frames_dir, tmp_path / "ntsc.mp4", Fraction(30000, 1001))
    info = video.probe(out)
    assert (info.frames, info.fps, info.audio_codec) == (11, Fraction(30000, 1001), None)
    assert (info.width, info.height) == (34, 36)
    means = [frame[:33, :31].reshape(-1, 3).mean(axis=0) for frame in _decoded_frames(out)]
    assert all(np.abs(mean - colours[n]).max() < 6 for n, mean in enumerate(means, start=1))


def test_stitch_refuses_a_gap_in_the_frame_numbers(clip: Path, tmp_path: Path) -> None:
    frames_dir = tmp_path / "frames"
    info = video.split(clip, frames_dir)
    (frames_dir / "00003.png").unlink()
    with pytest.raises(ValueError, match=r"00003\.png"):
        video.stitch(frames_dir, tmp_path / "out.mp4", info.fps)
    assert not (tmp_path / "out.mp4").exists()


def test_probe_reports_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        video.probe(tmp_path / "missing.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="cannot read"):
        video.probe(tmp_path / "junk.mp4")


def test_contact_sheet_puts_sources_above_styled_frames(tmp_path: Path) -> None:
    red, blue = Image.new("RGB", (40, 30), "red"), Image.new("RGB", (40, 30), "blue")
    out = video.contact_sheet(
        [(red, blue), (red, blue), (red, blue)], tmp_path / "sheet.png", labels=["a", "b", "c"]
    )
    with Image.open(out) as sheet:
        pixels = np.asarray(sheet.convert("RGB"))
    assert sheet.format == "PNG" and sheet.size[0] > 3 * 40 and sheet.size[1] > 2 * 30
    red_rows = np.flatnonzero((pixels == (255, 0, 0)).all(axis=2).any(axis=1))
    blue_rows = np.flatnonzero((pixels == (0, 0, 255)).all(axis=2).any(axis=1))
    assert len(red_rows) == 30 and len(blue_rows) == 30 and red_rows.max() < blue_rows.min()
    with pytest.raises(ValueError, match="2 labels for 3 pairs"):
        video.contact_sheet([(red, blue)] * 3, tmp_path / "x.png", labels=["a", "b"])
