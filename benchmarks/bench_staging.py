"""Staging speed against the embedded Azurite: azbai's verified download next to a plain SDK download, and the cost
of an unchanged incremental re-sync.

``staging_download_ratio``
    azbai ``download`` throughput (MD5-verified, temp file + rename, default workers) / the best plain
    azure-storage-blob throughput (a ThreadPoolExecutor over ``download_blob().readinto``, no verification; the best
    of 4, 8 and 16 threads: the thread count whose median is best), 200 x 1 MB blobs, all four measured in every
    round in a rotating order; medians over the rounds. Target ≥ 0.9.
``staging_incremental_ratio``
    time of an unchanged incremental re-sync / time of the first (full) incremental download into an empty
    directory; median of rounds. Target ≤ 0.1. ``staging_incremental_nocache_ratio`` is the same with the MD5 cache
    deleted first (every local file hashed), to show what the cache buys.

The absolute figures (MB/s, seconds) are medians too. The machines are shared; read ratios, not absolutes.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from azbai.local.azurite import DEV_ACCOUNT, Emulator, connection_string
from azbai.local.stores import BlobStore
from azbai.local.transfer import download, md5_cache_path, upload
from azbai.local.workspace import Workspace

BLOBS = 200
BLOB_SIZE = 1 << 20
ROUNDS = 7
PLAIN_THREADS = (4, 8, 16)
CONTAINER = "bench"
PREFIX = "data"


def _plain_download(port: int, dest: Path, threads: int) -> float:
    """The simplest fast SDK download of every blob under PREFIX; returns seconds."""
    from azure.storage.blob import BlobServiceClient

    container = BlobServiceClient.from_connection_string(connection_string(port)).get_container_client(
        CONTAINER
    )

    def one(name: str) -> None:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as handle:
            container.get_blob_client(name).download_blob().readinto(handle)

    started = time.perf_counter()
    names = list(container.list_blob_names(name_starts_with=f"{PREFIX}/"))
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, names))
    return time.perf_counter() - started


def _timed(func: object, *args: object, **kwargs: object) -> float:
    started = time.perf_counter()
    func(*args, **kwargs)  # type: ignore[operator]
    return time.perf_counter() - started


def run() -> dict[str, float]:
    """Measure; see the module docstring."""
    tmp = Path(tempfile.mkdtemp(prefix="azbai-bench-staging-"))
    emulator = Emulator(Workspace(tmp / "ws"))
    try:
        state = emulator.ensure()
        store = BlobStore.open(emulator.workspace, DEV_ACCOUNT, CONTAINER)
        source = tmp / "src"
        source.mkdir()
        for i in range(BLOBS):
            (source / f"f{i:04d}.bin").write_bytes(os.urandom(BLOB_SIZE))
        upload_report = upload(source, store, PREFIX)
        total_mb = BLOBS * BLOB_SIZE / 1e6

        # Every round runs the four contestants (plain at 4, 8 and 16 threads, azbai at its defaults) in a
        # rotated order, so that none always goes first or last on a machine whose load drifts.
        contestants: list[int | str] = [*PLAIN_THREADS, "azbai"]
        rates: dict[int | str, list[float]] = {c: [] for c in contestants}
        first_times, resync_times, nocache_times = [], [], []
        for round_ in range(ROUNDS):
            shift = round_ % len(contestants)
            for contestant in contestants[shift:] + contestants[:shift]:
                dest = tmp / f"dl-{round_}-{contestant}"
                if isinstance(contestant, int):
                    seconds = _plain_download(state.port, dest, contestant)
                else:
                    seconds = _timed(download, store, PREFIX, dest)
                rates[contestant].append(total_mb / seconds)
                shutil.rmtree(dest)

            dest = tmp / f"sync-{round_}"
            first_times.append(_timed(download, store, PREFIX, dest, incremental=True))
            resync_times.append(_timed(download, store, PREFIX, dest, incremental=True))
            md5_cache_path(dest).unlink()
            nocache_times.append(_timed(download, store, PREFIX, dest, incremental=True))
            shutil.rmtree(dest)

        # "Best of thread counts": the thread count with the best median, not the best single sample (the maximum
        # of three noisy samples would flatter the baseline).
        plain_medians = {c: statistics.median(rates[c]) for c in PLAIN_THREADS}
        best_threads = max(plain_medians, key=lambda c: plain_medians[c])
        azbai_rate = statistics.median(rates["azbai"])
        first = statistics.median(first_times)
        return {
            "staging_download_ratio": azbai_rate / plain_medians[best_threads],
            "staging_incremental_ratio": statistics.median(
                r / f for r, f in zip(resync_times, first_times, strict=True)
            ),
            "staging_incremental_nocache_ratio": statistics.median(
                n / f for n, f in zip(nocache_times, first_times, strict=True)
            ),
            "staging_azbai_download_mb_s": azbai_rate,
            "staging_plain_download_mb_s": plain_medians[best_threads],
            "staging_plain_best_threads": float(best_threads),
            **{f"staging_plain_{c}_threads_mb_s": plain_medians[c] for c in PLAIN_THREADS},
            "staging_first_download_s": first,
            "staging_resync_s": statistics.median(resync_times),
            "staging_upload_mb_s": upload_report.throughput_mb_s,
        }
    finally:
        emulator.stop()
        shutil.rmtree(tmp, ignore_errors=True)
