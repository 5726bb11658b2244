"""Video building blocks of the style-transfer recipe, in-process with PyAV (no ffmpeg binary needed).

The Batch AI reference ran four ffmpeg commands; these functions replace them:

- ``ffmpeg -i in.mp4 %05d_in.jpg``            → `split` (lossless PNG frames ``00001.png``...)
- ``ffmpeg -i in.mp4 in.mp3``                 → `split` copies the audio packets into an ``.m4a``, no re-encode
- ``ffmpeg -framerate 30 -i %05d.jpg -c:v libx264 -crf 20 -pix_fmt yuv420p`` → `stitch`, at the source's
  exact frame rate instead of a hard-coded 30
- ``ffmpeg -i v.mp4 -i a.mp3 -c copy``        → `stitch` muxes the audio packets unchanged

Audio goes into an MP4-family container (``.m4a``) rather than a raw ADTS ``.aac`` file: ADTS cannot carry
the encoder-delay edit list, so a copy through ``.aac`` comes back shifted by 1024 samples.

`make_clip` builds a short, deterministic test clip from photos bundled with scikit-image (NASA astronaut,
public domain; Chelsea the cat and coffee, CC0; rocket, public domain), and `contact_sheet` draws
before/after frames side by side.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

logger = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_NAME",
    "VideoError",
    "VideoInfo",
    "contact_sheet",
    "frame_paths",
    "make_clip",
    "probe",
    "read_manifest",
    "split",
    "stitch",
]

MANIFEST_NAME = "video.json"
DEFAULT_AUDIO_NAME = "audio.m4a"
_FRAME_NAME = re.compile(r"^(\d{5,})\.(png|jpg|ppm)$")
#: frame formats `split` writes: lossless PNG, JPEG (quality 95) as the Batch AI reference did, 2-3x faster, or
#: uncompressed PPM (binary P6), lossless and nearly free to write and read, but 3-10x the bytes: for frames that
#: stay on one machine
FRAME_FORMATS = ("png", "jpg", "ppm")
_AUDIO_SUFFIXES = (".m4a", ".mp4", ".mov")
_SAMPLE_RATE = 44100
_AAC_FRAME = 1024


class VideoError(ValueError):
    """A video, frame folder or audio file that cannot be used as asked; the message says why."""


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` and `split` report about a video (``duration`` in seconds)."""

    frames: int
    fps: Fraction
    width: int
    height: int
    video_codec: str
    audio_codec: str | None
    duration: float

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict; ``fps`` as the exact string ``"num/den"``."""
        return {
            "frames": self.frames,
            "fps": f"{self.fps.numerator}/{self.fps.denominator}",
            "width": self.width,
            "height": self.height,
            "video_codec": self.video_codec,
            "audio_codec": self.audio_codec,
            "duration": self.duration,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> VideoInfo:
        """Inverse of `to_dict`."""
        audio_codec = data.get("audio_codec")
        return cls(
            frames=int(str(data["frames"])),
            fps=Fraction(str(data["fps"])),
            width=int(str(data["width"])),
            height=int(str(data["height"])),
            video_codec=str(data["video_codec"]),
            audio_codec=None if audio_codec is None else str(audio_codec),
            duration=float(str(data["duration"])),
        )


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise VideoError(f"video not found: {path}")
    try:
        return av.open(str(path))
    except av.FFmpegError as exc:
        raise VideoError(f"cannot read {path} as a video: {exc}") from exc


def _frame_rate(stream: av.video.stream.VideoStream, path: Path) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        raise VideoError(f"{path} does not state a frame rate")
    return Fraction(rate.numerator, rate.denominator)


def probe(path: str | Path) -> VideoInfo:
    """Describe a video; the frame count comes from decoding every frame, not from the header."""
    source = Path(path)
    with _open(source) as container:
        if not container.streams.video:
            raise VideoError(f"{source} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
        frames = sum(1 for _ in container.decode(stream))
        fps = _frame_rate(stream, source)
        duration = container.duration / av.time_base if container.duration else frames / fps
        return VideoInfo(
            frames=frames,
            fps=fps,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            video_codec=stream.codec_context.name,
            audio_codec=audio,
            duration=float(duration),
        )


def _check_audio_suffix(path: Path) -> None:
    if path.suffix.lower() not in _AUDIO_SUFFIXES:
        raise VideoError(
            f"audio must go to an MP4-family file ({', '.join(_AUDIO_SUFFIXES)}), got {path.name}: raw ADTS "
            ".aac loses the encoder-delay edit list and shifts the audio by 1024 samples"
        )


def split(
    video: str | Path, frames_dir: str | Path, audio_path: str | Path | None = None, image_format: str = "png"
) -> VideoInfo:
    """Decode every frame of ``video`` to ``frames_dir/00001.png``... (``.jpg``, ``.ppm``) and copy its audio as is.

    The audio packets go to ``audio_path`` (default ``frames_dir/audio.m4a``) when the video has sound.
    ``frames_dir/video.json`` records the exact frame rate, frame count, size and audio file for `stitch`.
    """
    if image_format not in FRAME_FORMATS:
        raise VideoError(f"image_format must be one of {', '.join(FRAME_FORMATS)}, got {image_format!r}")
    source, out_dir = Path(video), Path(frames_dir)
    audio_file = Path(audio_path) if audio_path is not None else out_dir / DEFAULT_AUDIO_NAME
    _check_audio_suffix(audio_file)
    out_dir.mkdir(parents=True, exist_ok=True)
    stale = [name for name, _ in _numbered_frames(out_dir)]
    if stale:
        raise VideoError(
            f"{out_dir} already holds numbered frames ({stale[0]}...); split into an empty folder"
        )
    with _open(source) as container:
        if not container.streams.video:
            raise VideoError(f"{source} has no video stream")
        vstream = container.streams.video[0]
        vstream.thread_type = "AUTO"
        astream = container.streams.audio[0] if container.streams.audio else None
        count = 0
        if astream is not None:
            audio_file.parent.mkdir(parents=True, exist_ok=True)
        audio_out = av.open(str(audio_file), "w", format="mp4") if astream is not None else None
        try:
            aout = audio_out.add_stream_from_template(astream) if audio_out and astream else None
            streams: list[av.stream.Stream] = [vstream] if astream is None else [vstream, astream]
            for packet in container.demux(streams):
                if packet.stream is astream:
                    # stream copy: the compressed packets move unchanged, timestamps included
                    if packet.dts is not None and audio_out is not None and aout is not None:
                        packet.stream = aout
                        audio_out.mux(packet)
                    continue
                for frame in packet.decode():
                    if isinstance(frame, av.VideoFrame):
                        count += 1
                        # threads=1, as in _encode_rgb: PyAV would start and join a swscale thread per core
                        # for each frame (0.19-0.21 s for the 12 s clip's 288 frames against 0.10 s, and several
                        # times that when the other core is busy)
                        rgb = frame.reformat(format="rgb24", threads=1)
                        if image_format == "ppm":
                            _write_ppm(out_dir / f"{count:05d}.ppm", rgb.to_ndarray())
                        elif image_format == "jpg":
                            rgb.to_image().save(out_dir / f"{count:05d}.jpg", quality=95)
                        else:
                            rgb.to_image().save(out_dir / f"{count:05d}.png", compress_level=1)
        finally:
            if audio_out is not None:
                audio_out.close()
        fps = _frame_rate(vstream, source)
        duration = container.duration / av.time_base if container.duration else count / fps
        info = VideoInfo(
            frames=count,
            fps=fps,
            width=vstream.codec_context.width,
            height=vstream.codec_context.height,
            video_codec=vstream.codec_context.name,
            audio_codec=astream.codec_context.name if astream is not None else None,
            duration=float(duration),
        )
    manifest = {
        **info.to_dict(),
        "source": source.name,
        "audio": _relative(audio_file, out_dir) if astream else None,
    }
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    logger.info("split %s into %d frames at %s fps (audio: %s)", source, count, fps, info.audio_codec)
    return info


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())


def read_manifest(frames_dir: str | Path) -> tuple[VideoInfo, Path | None]:
    """Read the ``video.json`` that `split` wrote: the source's `VideoInfo` and its audio file, if any."""
    folder = Path(frames_dir)
    path = folder / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise VideoError(f"{path} not found; it is written by split()") from exc
    except json.JSONDecodeError as exc:
        raise VideoError(f"{path} is not valid JSON: {exc}") from exc
    audio = data.get("audio")
    return VideoInfo.from_dict(data), (folder / audio if audio else None)


def _numbered_frames(frames_dir: Path) -> list[tuple[str, int]]:
    found = []
    for entry in frames_dir.iterdir():
        match = _FRAME_NAME.match(entry.name)
        if match:
            found.append((entry.name, int(match.group(1))))
    return sorted(found, key=lambda item: item[1])


def frame_paths(frames_dir: str | Path) -> list[Path]:
    """The numbered frames ``00001.png``... of ``frames_dir`` in order; a gap or duplicate is a `VideoError`."""
    folder = Path(frames_dir)
    if not folder.is_dir():
        raise VideoError(f"frame folder not found: {folder}")
    frames = _numbered_frames(folder)
    if not frames:
        raise VideoError(f"no numbered frames (00001.png, 00002.png, ...) in {folder}")
    numbers = [number for _, number in frames]
    if len({Path(name).suffix for name, _ in frames}) > 1:
        raise VideoError(
            f"{folder} mixes frame formats ({', '.join(sorted({Path(n).suffix for n, _ in frames}))})"
        )
    if len(set(numbers)) != len(numbers):
        twice = sorted({n for n in numbers if numbers.count(n) > 1})
        raise VideoError(f"frame numbers {twice[:5]} appear more than once in {folder}")
    missing = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
    if missing:
        shown = ", ".join(f"{n:05d}.png" for n in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise VideoError(
            f"{len(missing)} frame(s) missing from {folder}: {shown}; frames must run from 00001.png to "
            f"{numbers[-1]:05d}.png without gaps (refusing to drop frames silently)"
        )
    return [folder / name for name, _ in frames]


def _write_ppm(path: Path, rgb: np.ndarray) -> None:
    """An H×W×3 uint8 array as a binary PPM (P6), the bytes PIL writes, without an Image in between.

    A PIL image per frame and its encoder pass cost more than the decode: on the 12 s benchmark clip's 288 256²
    frames, `split.py` took 0.82-0.99 CPU-s through PIL and takes 0.70-0.74 (4 runs each), and `stitch` reading them
    with `_read_ppm` 1.07-1.16 against 1.25-1.45.
    """
    height, width, _ = rgb.shape
    with open(path, "wb") as file:
        file.write(b"P6\n%d %d\n255\n" % (width, height))
        file.write(np.ascontiguousarray(rgb, dtype=np.uint8).data)


# P6, width, height, maxval, each after whitespace or comments, then one whitespace byte before the samples
_PPM_HEADER = re.compile(rb"P6(?:\s|#[^\n]*\n)+(\d+)(?:\s|#[^\n]*\n)+(\d+)(?:\s|#[^\n]*\n)+(\d+)\s")


def _read_ppm(path: Path) -> np.ndarray | None:
    """A binary 8-bit PPM as an H×W×3 array, read without a decoder; None for any other file (PIL reads those)."""
    data = path.read_bytes()
    header = _PPM_HEADER.match(data)
    if header is None:
        return None
    width, height, maxval = (int(value) for value in header.groups())
    if maxval != 255 or len(data) - header.end() != width * height * 3:
        return None  # 16-bit samples, or a truncated file: PIL reads the one and names the other
    return np.frombuffer(data, dtype=np.uint8, offset=header.end()).reshape(height, width, 3)


def _rgb_even(path: Path, size: tuple[int, int]) -> np.ndarray:
    array = _read_ppm(path) if path.suffix == ".ppm" else None
    if array is None:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    if (array.shape[1], array.shape[0]) != size:
        raise VideoError(
            f"{path.name} is {array.shape[1]}x{array.shape[0]}, the first frame {size[0]}x{size[1]}"
        )
    pad_h, pad_w = array.shape[0] % 2, array.shape[1] % 2
    # yuv420p needs even sides; repeat the last row/column rather than drop a line of the picture
    return np.pad(array, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge") if pad_h or pad_w else array


def stitch(
    frames_dir: str | Path, out_mp4: str | Path, fps: Fraction, audio_path: str | Path | None = None
) -> Path:
    """Encode ``frames_dir/00001.png``... to H.264 (crf 20, yuv420p) at exactly ``fps``; mux audio unchanged.

    Every frame from 00001 to the highest number must exist (`frame_paths`). Odd frame sizes are padded by
    one pixel. The audio packets of ``audio_path`` (an ``.m4a`` from `split`) are copied, not re-encoded.
    """
    rate = Fraction(fps)
    if rate <= 0:
        raise VideoError(f"fps must be positive, got {fps}")
    frames = frame_paths(frames_dir)
    with Image.open(frames[0]) as first:
        size = first.size
    target = Path(out_mp4)
    target.parent.mkdir(parents=True, exist_ok=True)
    audio_in = None
    if audio_path is not None:
        _check_audio_suffix(Path(audio_path))
        audio_in = _open(Path(audio_path))
        if not audio_in.streams.audio:
            audio_in.close()
            raise VideoError(f"{audio_path} has no audio stream")
    try:
        with av.open(str(target), "w", format="mp4") as out:
            # ultrafast: the encode is the pipeline's largest cost after the network. On this recipe's styled 256²
            # frames (288, 2 threads) it takes 0.26 CPU-s against veryfast's 1.03 and medium's 3.0, at a higher PSNR
            # against them (23.4 dB against 23.1; luma 31.0 against 30.0; yuv420p's chroma alone costs them 25.9 dB)
            # for 25 % more bytes. Photographic frames get 0.9 dB less than veryfast's (36.8 against 37.7) in 2.3x
            # the bytes
            vout = _h264_stream(out, rate, size[0] + size[0] % 2, size[1] + size[1] % 2, "ultrafast")
            audio_packets: Iterator[av.Packet] = iter(())
            if audio_in is not None:
                astream = audio_in.streams.audio[0]
                aout = out.add_stream_from_template(astream)
                audio_packets = (p for p in audio_in.demux(astream) if p.dts is not None)
            pending = next(audio_packets, None)
            for index, frame in enumerate(_yuv_frames(frames, size)):
                out.mux(vout.encode(frame))
                # interleave: copy the audio that plays before the next frame starts
                until = Fraction(index + 1) / rate
                while pending is not None and _seconds(pending) < until:
                    pending.stream = aout
                    out.mux(pending)
                    pending = next(audio_packets, None)
            out.mux(vout.encode())
            while pending is not None:
                pending.stream = aout
                out.mux(pending)
                pending = next(audio_packets, None)
    finally:
        if audio_in is not None:
            audio_in.close()
    logger.info("stitched %d frames at %s fps into %s", len(frames), rate, target)
    return target


def _seconds(packet: av.Packet) -> Fraction:
    stamp = packet.pts if packet.pts is not None else packet.dts
    return Fraction(stamp or 0) * Fraction(packet.time_base)


def _h264_stream(
    out: av.container.OutputContainer, rate: Fraction, width: int, height: int, preset: str
) -> av.video.stream.VideoStream:
    stream = out.add_stream("libx264", rate=rate)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": "20", "profile": "high", "preset": preset}
    # x264's sliced threads (PyAV's default) give different bytes from run to run. Frame threads give the same
    # bytes for the same thread count (checked under CPU contention too), so the count is fixed, not the machine's:
    # 2 encode the 12 s benchmark clip's styled frames in 0.47-0.54 s against 0.77-0.83 s for 1 (veryfast), at the
    # same PSNR
    stream.codec_context.thread_count = 2
    stream.codec_context.thread_type = "FRAME"
    return stream


def _encode_rgb(stream: av.video.stream.VideoStream, array: np.ndarray, pts: int) -> list[av.Packet]:
    return stream.encode(_yuv420p(array, pts))


def _yuv420p(array: np.ndarray, pts: int) -> av.VideoFrame:
    # RGB -> yuv420p (BT.601, as ffmpeg's CLI does by default) here, where it can be seen, not inside encode()
    # threads=1: left to PyAV, every call makes a swscale context with a thread per core and joins them again,
    # 0.8 ms a 256² frame against 0.25 ms, and 3x that when the cores are busy
    rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")
    frame = rgb.reformat(format="yuv420p", threads=1)
    frame.pts = pts
    return frame


def _read_yuv420p(path: Path, size: tuple[int, int], pts: int) -> av.VideoFrame:
    return _yuv420p(_rgb_even(path, size), pts)


#: how many frames the reader of `stitch` keeps ready ahead of the encoder
_READ_AHEAD = 8


def _yuv_frames(paths: Sequence[Path], size: tuple[int, int]) -> Iterator[av.VideoFrame]:
    """The frames of ``paths`` as yuv420p, in order, read and converted on a thread of their own.

    PyAV lets go of the GIL while it converts and while x264 encodes, so reading the next frames overlaps encoding
    this one: `stitch` takes the 12 s benchmark clip's 288 styled frames in 0.53-0.96 s (median 0.85) against
    0.58-1.10 s (0.91) one after the other, for the same bytes and a little more CPU time (medians 0.85 and
    0.81 s; 10 runs each, alternated, on a machine whose host took half its CPU time). A frame that cannot be read
    raises here, in its turn.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="stitch-read") as reader:
        ahead: deque[Future[av.VideoFrame]] = deque()
        upcoming = iter(enumerate(paths))

        def read_next() -> None:
            item = next(upcoming, None)
            if item is not None:
                index, path = item
                ahead.append(reader.submit(_read_yuv420p, path, size, index))

        for _ in range(_READ_AHEAD):
            read_next()
        try:
            while ahead:
                frame = ahead.popleft().result()
                read_next()
                yield frame
        finally:
            for future in ahead:
                future.cancel()


# -- a test clip and a before/after sheet ------------------------------------------------------------------

# per photo: (zoom at start, zoom at end, centre at start, centre at end), centres as fractions of the photo
_MOTIONS = (
    (1.0, 0.65, (0.5, 0.5), (0.45, 0.3)),  # astronaut: push in on the face
    (0.7, 1.0, (0.35, 0.5), (0.5, 0.5)),  # cat: pull out while panning right
    (0.9, 0.6, (0.4, 0.6), (0.6, 0.45)),  # coffee: drift across the cup
    (0.6, 0.95, (0.5, 0.35), (0.5, 0.5)),  # rocket: tilt down and pull out
)
# C major, A minor, F major, G major: one chord per photo
_CHORDS = ((261.63, 329.63, 392.0), (220.0, 261.63, 329.63), (174.61, 220.0, 261.63), (196.0, 246.94, 293.66))


def _photos() -> list[Image.Image]:
    from skimage import data  # bundled with the wheel; nothing is downloaded

    return [
        Image.fromarray(load()).convert("RGB")
        for load in (data.astronaut, data.chelsea, data.coffee, data.rocket)
    ]


def _ken_burns(photo: Image.Image, size: tuple[int, int], progress: float, motion: tuple) -> Image.Image:
    zoom0, zoom1, (cx0, cy0), (cx1, cy1) = motion
    ease = 0.5 - 0.5 * math.cos(math.pi * min(max(progress, 0.0), 1.0))
    zoom = zoom0 + (zoom1 - zoom0) * ease
    width, height = photo.size
    aspect = size[0] / size[1]
    box_w = min(width, height * aspect) * zoom
    box_h = box_w / aspect
    cx = min(max((cx0 + (cx1 - cx0) * ease) * width, box_w / 2), width - box_w / 2)
    cy = min(max((cy0 + (cy1 - cy0) * ease) * height, box_h / 2), height - box_h / 2)
    box = (cx - box_w / 2, cy - box_h / 2, cx + box_w / 2, cy + box_h / 2)
    return photo.resize(size, Image.Resampling.BICUBIC, box=box)


def _photo_frame(
    photo: Image.Image, k: int, t: float, segment: float, fade: float, size: tuple[int, int]
) -> Image.Image:
    # each photo moves over its own segment plus half a fade on both sides
    progress = (t - (k * segment - fade / 2)) / (segment + fade)
    return _ken_burns(photo, size, progress, _MOTIONS[k % len(_MOTIONS)])


def _clip_frames(count: int, size: tuple[int, int]) -> Iterator[np.ndarray]:
    photos = _photos()
    segment = count / len(photos)
    fade = max(1.0, min(12.0, segment / 2))  # cross-fade length in frames
    for index in range(count):
        t = index + 0.5
        k = min(int(t // segment), len(photos) - 1)
        picture = _photo_frame(photos[k], k, t, segment, fade, size)
        boundary = (k + 1) * segment
        if k + 1 < len(photos) and t > boundary - fade / 2:
            following = _photo_frame(photos[k + 1], k + 1, t, segment, fade, size)
            picture = Image.blend(picture, following, min(1.0, (t - (boundary - fade / 2)) / fade))
        elif k > 0 and t < k * segment + fade / 2:
            previous = _photo_frame(photos[k - 1], k - 1, t, segment, fade, size)
            picture = Image.blend(previous, picture, 0.5 + (t - k * segment) / fade)
        yield np.asarray(picture)


def _chords(seconds: float, parts: int) -> np.ndarray:
    samples = round(seconds * _SAMPLE_RATE)
    t = np.arange(samples) / _SAMPLE_RATE
    segment = max(1, math.ceil(samples / parts))
    signal = np.zeros(samples)
    for k in range(parts):
        start, stop = k * segment, min(samples, (k + 1) * segment)
        tone = sum(np.sin(2 * np.pi * f * t[start:stop]) for f in _CHORDS[k % len(_CHORDS)])
        ramp = min(882, (stop - start) // 2)  # 20 ms raised-cosine attack and release: no clicks
        envelope = np.ones(stop - start)
        if ramp:
            edge = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp))
            envelope[:ramp], envelope[-ramp:] = edge, edge[::-1]
        signal[start:stop] = 0.2 / 3 * tone * envelope
    return signal.astype(np.float32)


def make_clip(
    out_mp4: str | Path, seconds: float = 3.0, fps: int | Fraction = 24, size: tuple[int, int] = (256, 256)
) -> Path:
    """Write a short H.264 + AAC clip: scikit-image photos panned and zoomed, cross-fading, over chords.

    It has ``round(seconds * fps)`` frames of ``size`` (width, height) and a mono 44.1 kHz AAC track of the
    same length. Nothing is random: the same arguments give the same pictures and the same AAC bytes (the
    H.264 bytes too, normally; see `_h264_stream`).
    """
    rate = Fraction(fps)
    count = round(seconds * rate)
    if count < 1:
        raise VideoError(f"a clip needs at least one frame; {seconds} s at {fps} fps has none")
    if size[0] % 2 or size[1] % 2 or min(size) < 16:
        raise VideoError(f"clip size must be even and at least 16 px a side, got {size[0]}x{size[1]}")
    target = Path(out_mp4)
    target.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(target), "w", format="mp4") as out:
        # veryfast: a photographic clip, small (2.3x smaller than ultrafast), its bytes the same as they have been
        video = _h264_stream(out, rate, *size, "veryfast")
        audio = out.add_stream("aac", rate=_SAMPLE_RATE)
        audio.layout = "mono"
        for index, array in enumerate(_clip_frames(count, size)):
            out.mux(_encode_rgb(video, array, index))
        out.mux(video.encode())
        sound = _chords(float(count / rate), len(_MOTIONS))
        for start in range(0, len(sound), _AAC_FRAME):
            chunk = av.AudioFrame.from_ndarray(
                sound[None, start : start + _AAC_FRAME], format="fltp", layout="mono"
            )
            chunk.sample_rate = _SAMPLE_RATE
            chunk.pts = start
            out.mux(audio.encode(chunk))
        out.mux(audio.encode())
    logger.info("made %s: %d frames at %s fps, %dx%d, with audio", target, count, rate, *size)
    return target


def contact_sheet(
    pairs: Sequence[tuple[Image.Image, Image.Image]],
    out_png: str | Path,
    labels: Sequence[str] | None = None,
) -> Path:
    """Save a two-row PNG grid: source frames on top, their styled versions below, one column per pair.

    Tiles take the size of the first source frame. ``labels`` (one per column) default to ``#1``, ``#2``...
    """
    if not pairs:
        raise VideoError("contact_sheet needs at least one (source, styled) pair")
    names = list(labels) if labels is not None else [f"#{n}" for n in range(1, len(pairs) + 1)]
    if len(names) != len(pairs):
        raise VideoError(f"{len(names)} labels for {len(pairs)} pairs")
    tile_w, tile_h = pairs[0][0].size
    margin, caption, gutter = 6, 14, 52  # gutter: room for the row titles on the left
    sheet = Image.new(
        "RGB",
        (gutter + len(pairs) * (tile_w + margin) + margin, 2 * (tile_h + caption + margin) + margin),
        "white",
    )
    draw = ImageDraw.Draw(sheet)
    for row, title in enumerate(("source", "styled")):
        top = margin + row * (tile_h + caption + margin)
        draw.text((margin, top + caption + tile_h // 2 - 5), title, fill="black")
        for column, (pair, name) in enumerate(zip(pairs, names, strict=True)):
            left = gutter + column * (tile_w + margin)
            draw.text((left, top), name, fill="black")
            tile = pair[row].convert("RGB")
            if tile.size != (tile_w, tile_h):
                tile = tile.resize((tile_w, tile_h), Image.Resampling.LANCZOS)
            sheet.paste(tile, (left, top + caption))
    target = Path(out_png)
    target.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(target, format="PNG")
    return target
