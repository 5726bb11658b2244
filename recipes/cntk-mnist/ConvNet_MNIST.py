"""PyTorch port of the Azure Batch AI CNTK quickstart's ``ConvNet_MNIST.py``.

Ported from Microsoft CNTK's ``Examples/Image/Classification/ConvNet/Python/ConvNet_MNIST.py``
(Copyright (c) Microsoft, MIT licence) in the form the Azure Batch AI quickstart ran it
(``recipes/CNTK/CNTK-GPU-Python/ConvNet_MNIST.py`` in github.com/Azure/BatchAI: paths from argv,
stdout merged into stderr). The network, the initialisation, the reader semantics, the learner
(per-sample learning rate, unit-gain momentum given as a time constant) and the log lines follow CNTK;
only torch, numpy and the standard library are used.

Usage::

    python ConvNet_MNIST.py [DATA_DIR [MODEL_DIR]] [--epochs N]

``DATA_DIR`` holds ``Train-28x28_cntk_text.txt`` and ``Test-28x28_cntk_text.txt`` in CNTK Text Format;
one checkpoint per epoch, ``ConvNet_MNIST_{epoch}.pt``, is written to ``MODEL_DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SHAPE = (1, 28, 28)
INPUT_DIM = 28 * 28
NUM_CLASSES = 10
TRAIN_FILE = "Train-28x28_cntk_text.txt"
TEST_FILE = "Test-28x28_cntk_text.txt"

INPUT_SCALE = 0.00390625  # CNTK's constant: 1/256, not 1/255
MINIBATCH_SIZE = 64
MAX_EPOCHS = 40
EPOCH_SIZE = 60000  # samples per epoch, as the original hard-coded
TEST_MINIBATCH_SIZE = 1024
LR_PER_SAMPLE = (0.001,) * 10 + (0.0005,) * 10 + (0.0001,)
MOMENTUM_TIME_CONSTANT = (0.0,) * 5 + (1024.0,)
SEED = 1
EPOCHS_ENV = "CONVNET_MNIST_EPOCHS"
EPOCH_SIZE_ENV = "CONVNET_MNIST_EPOCH_SIZE"

_SCRIPT_DIR = Path(__file__).resolve().parent
# The Batch AI script required both arguments; CNTK's own example used these script-relative defaults.
DEFAULT_DATA_DIR = _SCRIPT_DIR.parent / "DataSets" / "MNIST"
DEFAULT_MODEL_DIR = _SCRIPT_DIR / "Models"


class DataError(Exception):
    """A data file is missing, unreadable or not in the expected CNTK Text Format."""


# ----------------------------------------------------------------------------------------------------------
# CNTK Text Format reader
# ----------------------------------------------------------------------------------------------------------


def read_ctf(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read an MNIST file in CNTK Text Format: one ``|labels <10 one-hot> |features <784 values>`` per line.

    The two fields may come in either order; ``|#`` comment fields and blank lines are ignored.
    Returns ``(features, labels)``: float32 of shape (N, 784) with the raw pixel values and int64 class
    indices of shape (N,). Raises :class:`DataError` naming the file and line of the first problem.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except OSError as exc:
        raise DataError(f"cannot read data file {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        bad_line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}, line {bad_line}: non-ASCII byte in a CNTK Text Format file") from None
    del raw

    label_fields: list[str] = []
    feature_fields: list[str] = []
    line_numbers: list[int] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            label_field, feature_field = _split_fields(line)
        except ValueError as exc:
            raise DataError(f"{path}, line {number}: {exc}") from None
        label_fields.append(label_field)
        feature_fields.append(feature_field)
        line_numbers.append(number)
    del text
    if not line_numbers:
        raise DataError(f"{path}: no samples in the file")

    onehot = _parse_block(label_fields, NUM_CLASSES, "labels", path, line_numbers)
    valid = ((onehot == 0) | (onehot == 1)).all(axis=1) & (onehot.sum(axis=1) == 1)
    if not valid.all():
        first = int(np.argmin(valid))
        raise DataError(
            f"{path}, line {line_numbers[first]}: labels must be one-hot over {NUM_CLASSES} classes, "
            f"found {label_fields[first].strip()!r}"
        )
    features = _parse_block(feature_fields, INPUT_DIM, "features", path, line_numbers)
    return features, onehot.argmax(axis=1).astype(np.int64)


def _split_fields(line: str) -> tuple[str, str]:
    """Split one CTF line into its ``labels`` and ``features`` value strings."""
    head, bar, rest = line.partition("|")
    if not bar:
        raise ValueError("no '|' field marker; expected '|labels ... |features ...'")
    if head.strip():
        raise ValueError(f"unexpected text {head.strip()[:20]!r} before the first '|'")
    found: dict[str, str] = {}
    for field in rest.split("|"):
        pieces = field.split(None, 1)
        if not pieces:
            raise ValueError("empty field after '|'")
        name = pieces[0]
        if name.startswith("#"):
            continue
        if name not in ("labels", "features"):
            raise ValueError(f"unknown field '|{name[:20]}' (expected '|labels' and '|features')")
        if name in found:
            raise ValueError(f"field '|{name}' appears twice")
        found[name] = pieces[1] if len(pieces) > 1 else ""
    missing = [name for name in ("labels", "features") if name not in found]
    if missing:
        raise ValueError("missing field " + " and ".join(f"'|{name}'" for name in missing))
    return found["labels"], found["features"]


def _parse_block(
    fields: list[str], width: int, what: str, path: Path, line_numbers: Sequence[int]
) -> np.ndarray:
    """Parse ``len(fields)`` rows of ``width`` numbers at once; on any mismatch find the offending line."""
    try:
        values = _parse_numbers(" ".join(fields))
    except (ValueError, DeprecationWarning):
        values = None
    if values is None or values.size != len(fields) * width or not np.isfinite(values).all():
        _raise_first_bad_row(fields, width, what, path, line_numbers)
        raise DataError(f"{path}: cannot parse the {what} values")  # not reached: a row is always at fault
    return values.reshape(len(fields), width)


def _parse_numbers(text: str) -> np.ndarray:
    """All whitespace-separated numbers in ``text`` as float32.

    MNIST files hold small non-negative integers only; those are decoded with vectorised byte arithmetic,
    several times faster than ``np.fromstring``, which handles anything else (signs, decimals, exponents).
    """
    data = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    if data.size == 0:
        return np.empty(0, dtype=np.float32)
    digit = (data >= ord("0")) & (data <= ord("9"))
    blank = (data == ord(" ")) | (data == ord("\t")) | (data == ord("\r")) | (data == ord("\n"))
    if (digit | blank).all():
        values = _parse_unsigned_integers(data, digit)
        if values is not None:
            return values
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NumPy < 2.3 only warns when it stops at an unparsable token
        return np.fromstring(text, dtype=np.float32, sep=" ")


def _parse_unsigned_integers(data: np.ndarray, digit: np.ndarray) -> np.ndarray | None:
    """Decode runs of ASCII digits separated by blanks; None when a number is too long for this path."""
    starts = np.flatnonzero(digit & ~np.concatenate(([False], digit[:-1])))
    ends = np.flatnonzero(digit & ~np.concatenate((digit[1:], [False]))) + 1
    lengths = ends - starts
    if lengths.size and lengths.max() > 9:
        return None
    values = data[starts].astype(np.int64) - ord("0")
    pending = np.flatnonzero(lengths > 1)
    offset = 1
    while pending.size:
        values[pending] = values[pending] * 10 + data[starts[pending] + offset] - ord("0")
        offset += 1
        pending = pending[lengths[pending] > offset]
    return values.astype(np.float32)


def _raise_first_bad_row(
    fields: list[str], width: int, what: str, path: Path, line_numbers: Sequence[int]
) -> None:
    """Raise a :class:`DataError` for the first row that is not ``width`` finite numbers."""
    for field, number in zip(fields, line_numbers, strict=True):
        tokens = field.split()
        if len(tokens) != width:
            raise DataError(f"{path}, line {number}: expected {width} {what} values, found {len(tokens)}")
        for token in tokens:
            try:
                value = float(token)
            except ValueError:
                raise DataError(
                    f"{path}, line {number}: {what} value {token[:20]!r} is not a number"
                ) from None
            if not math.isfinite(value):
                raise DataError(f"{path}, line {number}: {what} value {token!r} is not finite")


# ----------------------------------------------------------------------------------------------------------
# Model, schedules, learner
# ----------------------------------------------------------------------------------------------------------


class Scale(nn.Module):
    """Multiply by a constant, like CNTK's ``element_times(constant(c), x)`` (no parameter)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


def build_model() -> nn.Sequential:
    """The CNTK ConvNet: 98,778 parameters in 10 tensors; input is raw pixels (1, 28, 28) in 0..255.

    Weights use Glorot/Xavier uniform and biases zero, CNTK's layer defaults (not PyTorch's).
    Call ``torch.manual_seed`` first for a reproducible initialisation.
    """
    model = nn.Sequential(
        OrderedDict(
            [
                ("scale", Scale(INPUT_SCALE)),
                ("conv1", nn.Conv2d(1, 32, 5, padding=2)),  # CNTK pad=True: "same"
                ("relu1", nn.ReLU()),
                ("pool1", nn.MaxPool2d(3, 2)),
                ("conv2", nn.Conv2d(32, 48, 3)),  # CNTK default pad=False: "valid"
                ("relu2", nn.ReLU()),
                ("pool2", nn.MaxPool2d(3, 2)),
                ("conv3", nn.Conv2d(48, 64, 3)),
                ("relu3", nn.ReLU()),
                ("flatten", nn.Flatten()),
                ("f4", nn.Linear(64 * 3 * 3, 96)),
                ("relu4", nn.ReLU()),
                ("drop4", nn.Dropout(0.5)),
                ("z", nn.Linear(96, NUM_CLASSES)),
            ]
        )
    )
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def parameter_summary(model: nn.Module) -> str:
    """CNTK's ``log_number_of_parameters`` line."""
    parameters = list(model.parameters())
    total = sum(parameter.numel() for parameter in parameters)
    return f"Training {total} parameters in {len(parameters)} parameter tensors."


def learning_rate_per_sample(epoch: int) -> float:
    """Per-sample learning rate for 0-based ``epoch``: 0.001 for 10 epochs, 0.0005 for 10, then 0.0001."""
    return LR_PER_SAMPLE[min(epoch, len(LR_PER_SAMPLE) - 1)]


def momentum_time_constant(epoch: int) -> float:
    """Momentum time constant in samples for 0-based ``epoch``: 0 (no momentum) for 5 epochs, then 1024."""
    return MOMENTUM_TIME_CONSTANT[min(epoch, len(MOMENTUM_TIME_CONSTANT) - 1)]


def momentum_per_minibatch(epoch: int, minibatch_size: int) -> float:
    """CNTK's momentum for one minibatch: ``exp(-minibatch_size / time_constant)``, 0 for a constant of 0."""
    time_constant = momentum_time_constant(epoch)
    return 0.0 if time_constant == 0 else math.exp(-minibatch_size / time_constant)


class UnitGainMomentumSGD:
    """CNTK's ``momentum_sgd`` learner with unit-gain momentum (CNTK's default).

    ``v = m * v + (1 - m) * lr * g`` then ``w = w - v``, where ``g`` is the gradient of the *summed*
    per-sample loss and ``lr`` the per-sample rate (CNTK ``UnitType.sample``). The rate sits inside the
    velocity, as in CNTK's ``Matrix::MomentumSGDUpdate``; ``torch.optim.SGD(dampening=m)`` would apply a
    changed rate to the whole history at once. No weight decay, no gradient clipping.
    """

    def __init__(self, parameters: Iterable[nn.Parameter]) -> None:
        self.parameters = list(parameters)
        self.velocity = [torch.zeros_like(parameter) for parameter in self.parameters]

    def zero_grad(self) -> None:
        """Drop the gradients of the previous minibatch."""
        for parameter in self.parameters:
            parameter.grad = None

    @torch.no_grad()
    def step(self, learning_rate: float, momentum: float) -> None:
        """Apply one update with the given per-sample rate and per-minibatch momentum."""
        for parameter, velocity in zip(self.parameters, self.velocity, strict=True):
            if parameter.grad is None:
                continue
            velocity.mul_(momentum).add_(parameter.grad, alpha=(1.0 - momentum) * learning_rate)
            parameter.sub_(velocity)


class RandomizedReader:
    """Endless reshuffled sweeps over ``num_samples`` indices, like CNTK's randomised ``MinibatchSource``.

    A minibatch may straddle two sweeps, as it can in CNTK when the epoch size is not the sweep size.
    """

    def __init__(self, num_samples: int, seed: int) -> None:
        self._num_samples = num_samples
        self._rng = np.random.default_rng(seed)
        self._order = np.empty(0, dtype=np.int64)
        self._position = 0

    def next_minibatch(self, size: int) -> np.ndarray:
        """The indices of the next ``size`` samples."""
        parts = []
        while size > 0:
            if self._position == self._order.size:
                self._order = self._rng.permutation(self._num_samples)
                self._position = 0
            take = min(size, self._order.size - self._position)
            parts.append(self._order[self._position : self._position + take])
            self._position += take
            size -= take
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


# ----------------------------------------------------------------------------------------------------------
# Progress lines
# ----------------------------------------------------------------------------------------------------------


def log(message: str = "") -> None:
    """Print one line and flush it at once: the lines are streamed while the job runs."""
    print(message, flush=True)


class ProgressPrinter:
    """The epoch summary of CNTK's ``ProgressPrinter(tag=..., num_epochs=...)``; the clock starts here."""

    def __init__(self, tag: str, num_epochs: int) -> None:
        self.tag = f"[{tag}] " if tag else ""
        self.num_epochs = num_epochs
        self.epochs = 0
        self._reset()

    def _reset(self) -> None:
        self.loss_sum = 0.0
        self.errors = 0.0
        self.samples = 0
        self.epoch_start = time.perf_counter()

    def update(self, loss_sum: float, errors: float, samples: int) -> None:
        """Account for one minibatch: its summed loss, its misclassified count and its size."""
        self.loss_sum += loss_sum
        self.errors += errors
        self.samples += samples

    def epoch_summary(self) -> str:
        """``Finished Epoch[...]`` for the samples since the last summary, then restart the counters."""
        self.epochs += 1
        elapsed = time.perf_counter() - self.epoch_start
        samples = self.samples
        loss = self.loss_sum / samples if samples else 0.0
        metric = self.errors / samples if samples else 0.0
        speed = samples / elapsed if elapsed > 0 else 0.0
        line = (
            f"Finished Epoch[{self.epochs} of {self.num_epochs}]: {self.tag}loss = {loss:0.6f} * {samples}, "
            f"metric = {metric * 100.0:0.2f}% * {samples} {elapsed:0.3f}s ({speed:5.1f} samples/s);"
        )
        self._reset()
        return line


# ----------------------------------------------------------------------------------------------------------
# Training and evaluation
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestResult:
    """The original's test loop outcome: error weighted by the requested minibatch sizes."""

    error: float
    minibatches: int
    samples: int

    def final_results(self) -> str:
        """The original's last line, with its ``minibatch_index + 1`` off-by-one kept."""
        return (
            f"Final Results: Minibatch[1-{self.minibatches + 1}]: "
            f"errs = {self.error * 100.0:0.2f}% * {self.samples}"
        )


def evaluate(
    model: nn.Module, features: torch.Tensor, labels: torch.Tensor, minibatch_size: int = TEST_MINIBATCH_SIZE
) -> TestResult:
    """Classification error over the test set in sequential minibatches, as the original's test loop."""
    epoch_size = labels.shape[0]  # the original hard-coded 10000, the size of the full MNIST test set
    metric_numer = 0.0
    metric_denom = 0
    sample_count = 0
    minibatch_index = 0
    model.eval()
    with torch.no_grad():
        while sample_count < epoch_size:
            current_minibatch = min(minibatch_size, epoch_size - sample_count)
            batch = slice(sample_count, sample_count + current_minibatch)
            predicted = model(features[batch]).argmax(dim=1)
            error = (predicted != labels[batch]).float().mean().item()
            metric_numer += error * current_minibatch
            metric_denom += current_minibatch
            sample_count += current_minibatch
            minibatch_index += 1
    return TestResult(metric_numer / metric_denom, minibatch_index, metric_denom)


def save_checkpoint(model: nn.Module, path: Path) -> None:
    """Write the state_dict atomically (the outputs folder may be uploaded while the job runs)."""
    partial = path.with_name(f".{path.name}.partial")
    torch.save(model.state_dict(), partial)
    os.replace(partial, path)


def _as_images(features: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(features).reshape(-1, *IMAGE_SHAPE).to(device)


def convnet_mnist(
    data_path: str | os.PathLike[str],
    model_path: str | os.PathLike[str],
    max_epochs: int = MAX_EPOCHS,
    seed: int = SEED,
    epoch_size: int = EPOCH_SIZE,
) -> float:
    """Train for ``max_epochs``, checkpoint after each, evaluate on the test file; return the test error."""
    data_path = Path(data_path)
    model_path = Path(model_path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    # Both files are read up front so that a bad test file fails now, not after the training.
    train_x, train_y = read_ctf(data_path / TRAIN_FILE)
    test_x, test_y = read_ctf(data_path / TEST_FILE)
    train_images, train_labels = _as_images(train_x, device), torch.from_numpy(train_y).to(device)
    test_images, test_labels = _as_images(test_x, device), torch.from_numpy(test_y).to(device)
    del train_x, test_x

    torch.manual_seed(seed)
    model = build_model().to(device)
    learner = UnitGainMomentumSGD(model.parameters())
    reader = RandomizedReader(train_labels.shape[0], seed)
    # As in CNTK, an epoch is a number of samples (60000), not a pass over the file: the randomised reader repeats
    # its sweeps, so with the 4,000 bundled digits an epoch is 15 sweeps and the schedules run as the original's.
    progress = ProgressPrinter("Training", max_epochs)
    model_path.mkdir(parents=True, exist_ok=True)

    log(parameter_summary(model))
    log()

    for epoch in range(max_epochs):
        learning_rate = learning_rate_per_sample(epoch)
        model.train()
        sample_count = 0
        while sample_count < epoch_size:
            size = min(MINIBATCH_SIZE, epoch_size - sample_count)
            index = torch.from_numpy(reader.next_minibatch(size)).to(device)
            labels = train_labels[index]
            output = model(train_images[index])
            loss = F.cross_entropy(output, labels, reduction="sum")  # per-sample rate => summed gradient
            learner.zero_grad()
            loss.backward()
            learner.step(learning_rate, momentum_per_minibatch(epoch, size))
            errors = (output.detach().argmax(dim=1) != labels).sum()
            progress.update(loss.item(), errors.item(), size)
            sample_count += size
        log(progress.epoch_summary())
        # .pt, not CNTK's .dnn: the file is a PyTorch state_dict for build_model(), not a CNTK graph.
        save_checkpoint(model, model_path / f"ConvNet_MNIST_{epoch}.pt")

    result = evaluate(model, test_images, test_labels)
    log()
    log(result.final_results())
    log()
    return result.error


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Positional ``DATA_DIR MODEL_DIR`` as in the original; ``--epochs`` or ``$CONVNET_MNIST_EPOCHS``."""
    parser = argparse.ArgumentParser(
        description="Train the CNTK ConvNet_MNIST network (PyTorch port) and report the test error."
    )
    parser.add_argument(
        "data_dir", nargs="?", type=Path, default=DEFAULT_DATA_DIR, help="folder with the CTF files"
    )
    parser.add_argument(
        "model_dir", nargs="?", type=Path, default=DEFAULT_MODEL_DIR, help="checkpoint folder"
    )
    parser.add_argument(
        "--epoch-size",
        type=_positive_int,
        default=None,
        help=f"samples per epoch (default ${EPOCH_SIZE_ENV} or {EPOCH_SIZE}, as the original)",
    )
    parser.add_argument(
        "--epochs",
        type=_positive_int,
        default=None,
        help=f"epochs to train (default ${EPOCHS_ENV} or {MAX_EPOCHS})",
    )
    args = parser.parse_args(argv)
    if args.epoch_size is None:
        from_env = os.environ.get(EPOCH_SIZE_ENV, "").strip()
        try:
            args.epoch_size = _positive_int(from_env) if from_env else EPOCH_SIZE
        except argparse.ArgumentTypeError as exc:
            parser.error(f"${EPOCH_SIZE_ENV}: {exc}")
    if args.epochs is None:
        from_env = os.environ.get(EPOCHS_ENV, "").strip()
        try:
            args.epochs = _positive_int(from_env) if from_env else MAX_EPOCHS
        except argparse.ArgumentTypeError as exc:
            parser.error(f"${EPOCHS_ENV}: {exc}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the recipe; everything goes to stderr, as the original's ``sys.stdout = sys.stderr``."""
    with contextlib.redirect_stdout(sys.stderr):
        args = parse_args(argv)
        try:
            convnet_mnist(args.data_dir, args.model_dir, max_epochs=args.epochs, epoch_size=args.epoch_size)
        except DataError as exc:
            log(f"Error: {exc}")
            return 1
        except OSError as exc:  # the model folder cannot be created or written
            log(f"Error: cannot write {exc.filename or args.model_dir}: {exc.strerror or exc}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
