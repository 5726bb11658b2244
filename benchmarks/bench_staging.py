"""Staging speed against the embedded Azurite: azbai's verified transfers next to plain SDK ones, and the cost of an
unchanged incremental re-sync.

``staging_download_ratio`` / ``staging_upload_ratio``
    azbai ``download`` (MD5-verified, temp file + rename) / ``upload`` (MD5 sent and checked by the service)
    throughput at its defaults ÷ the best plain azure-storage-blob throughput (a ThreadPoolExecutor over
    ``download_blob().readinto`` / ``upload_blob(overwrite=True)``, no verification), 200 x 1 MB files. "Best" is
    the plain contestant with the best median among the SDK's default client at 8 threads and azbai's transport
    (:func:`blob_service_client`) at 4, 8 and 16 threads (``PLAIN``), so that neither azbai's transport settings
    nor a thread count chosen for one side decide the ratio. Every contestant runs in every round, in a rotating
    order; medians over the rounds. Targets ≥ 0.95.
``staging_small_files_download_ratio`` / ``staging_small_files_upload_ratio``
    the same with 2,000 x 20 KB files (a style pipeline's frames), where per-request cost, not bandwidth, is the
    limit. Targets ≥ 0.9.
``staging_incremental_ratio``
    time of an unchanged incremental re-sync / time of the first (full) incremental download into an empty
    directory; median of rounds. Target ≤ 0.1. ``staging_incremental_nocache_ratio`` is the same with the MD5 cache
    deleted first (every local file hashed), to show what the cache buys.

Fairness, both ways: every client is made once and its connections opened before the first round (azbai's store
is reused across rounds, so the plain clients are too); both sides list what they download (the plain side by
name only, the cheapest listing; azbai needs sizes and MD5s); the same files, the same emulator. The absolute
figures (MB/s, seconds) are medians too. The machines are shared; read ratios, not absolutes.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from azbai.local.azurite import DEV_ACCOUNT, Emulator, blob_service_client, connection_string
from azbai.local.stores import BlobStore
from azbai.local.transfer import download, md5_cache_path, upload
from azbai.local.workspace import Workspace

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

BLOBS = 200
BLOB_SIZE = 1 << 20
SMALL_FILES = 2000
SMALL_SIZE = 20 << 10
ROUNDS = int(os.environ.get("BENCH_STAGING_ROUNDS", "5"))
#: The plain contestants: (client, threads). See _plain_clients; the SDK's own client has a 10-connection pool, so
#: it is not given more threads than that.
PLAIN: tuple[tuple[str, int], ...] = (("tuned", 4), ("tuned", 8), ("tuned", 16), ("sdk", 8))
CONTAINER = "bench"
PREFIX = "data"


def _plain_clients(port: int) -> dict[str, ContainerClient]:
    """The plain contestants' two clients, each made once and reused (warm) like azbai's store.

    ``sdk``: what ``from_connection_string`` gives (requests' 10-connection pool, 4 KiB read blocks, proxy lookups
    per request); ``tuned``: the same transport azbai's store uses (:func:`blob_service_client`: a 64-connection
    pool, 1 MiB read blocks, no proxy lookups). The plain side gets the better of the two, so that azbai's own
    transport settings are not what the ratio measures.
    """
    from azure.storage.blob import BlobServiceClient

    return {
        "sdk": BlobServiceClient.from_connection_string(connection_string(port)).get_container_client(
            CONTAINER
        ),
        "tuned": blob_service_client(port).get_container_client(CONTAINER),
    }


def _warm(container: ContainerClient, threads: int) -> None:
    """Open ``threads`` pooled connections (one request each), as azbai's store has after its first transfer."""
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda _: container.exists(), range(threads)))


def _plain_download(container: ContainerClient, prefix: str, dest: Path, threads: int) -> float:
    """The simplest fast SDK download of every blob under ``prefix`` (listed by name: the cheapest listing, which
    a plain download needs as much as azbai's); returns seconds."""

    def one(name: str) -> None:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as handle:
            container.get_blob_client(name).download_blob().readinto(handle)

    started = time.perf_counter()
    names = list(container.list_blob_names(name_starts_with=f"{prefix}/"))
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, names))
    return time.perf_counter() - started


def _plain_upload(container: ContainerClient, source: Path, prefix: str, threads: int) -> float:
    """The simplest fast SDK upload of every file in ``source`` (flat) to ``prefix/``; returns seconds."""

    def one(path: Path) -> None:
        with open(path, "rb") as handle:
            container.upload_blob(f"{prefix}/{path.name}", handle, overwrite=True)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, sorted(source.iterdir())))
    return time.perf_counter() - started


def _timed(func: object, *args: object, **kwargs: object) -> float:
    started = time.perf_counter()
    func(*args, **kwargs)  # type: ignore[operator]
    return time.perf_counter() - started


def _files(folder: Path, count: int, size: int) -> Path:
    folder.mkdir()
    for i in range(count):
        (folder / f"f{i:05d}.bin").write_bytes(os.urandom(size))
    return folder


def _contest(
    tmp: Path,
    clients: dict[str, ContainerClient],
    store: BlobStore,
    source: Path,
    prefix: str,
    direction: str,
) -> dict[str, float]:
    """azbai against each plain contestant, in rotating order every round; medians, and the best plain median."""
    contestants: list[tuple[str, int] | str] = [*PLAIN, "azbai"]
    seconds: dict[tuple[str, int] | str, list[float]] = {c: [] for c in contestants}
    for round_ in range(ROUNDS):
        shift = round_ % len(contestants)
        for contestant in contestants[shift:] + contestants[:shift]:
            name = contestant if isinstance(contestant, str) else f"{contestant[0]}{contestant[1]}"
            if direction == "download":
                dest = tmp / f"dl-{round_}-{name}"
                if isinstance(contestant, tuple):
                    client, threads = clients[contestant[0]], contestant[1]
                    seconds[contestant].append(_plain_download(client, prefix, dest, threads))
                else:
                    seconds[contestant].append(_timed(download, store, prefix, dest))
                shutil.rmtree(dest)
            else:
                target = f"up-{prefix}/{name}"
                if isinstance(contestant, tuple):
                    client, threads = clients[contestant[0]], contestant[1]
                    seconds[contestant].append(_plain_upload(client, source, target, threads))
                else:
                    seconds[contestant].append(_timed(upload, source, store, target))
    medians = {c: statistics.median(seconds[c]) for c in contestants}
    best = min(PLAIN, key=lambda c: medians[c])
    # "Best plain": the contestant with the best median, not the best single sample (the maximum of several noisy
    # samples would flatter the baseline).
    return {"ratio": medians[best] / medians["azbai"], "azbai_s": medians["azbai"], "plain_s": medians[best],
            "best_threads": float(best[1]), "best_tuned": float(best[0] == "tuned")}  # fmt: skip


def run() -> dict[str, float]:
    """Measure; see the module docstring."""
    tmp = Path(tempfile.mkdtemp(prefix="azbai-bench-staging-"))
    emulator = Emulator(Workspace(tmp / "ws"))
    try:
        state = emulator.ensure()
        store = BlobStore.open(emulator.workspace, DEV_ACCOUNT, CONTAINER)
        source = _files(tmp / "src", BLOBS, BLOB_SIZE)
        small = _files(tmp / "small", SMALL_FILES, SMALL_SIZE)
        upload(source, store, PREFIX)
        upload(small, store, "small")
        total_mb = BLOBS * BLOB_SIZE / 1e6
        small_mb = SMALL_FILES * SMALL_SIZE / 1e6

        clients = _plain_clients(state.port)
        for client in clients.values():
            _warm(client, max(threads for _, threads in PLAIN))
        big_down = _contest(tmp, clients, store, source, PREFIX, "download")
        big_up = _contest(tmp, clients, store, source, PREFIX, "upload")
        small_down = _contest(tmp, clients, store, small, "small", "download")
        small_up = _contest(tmp, clients, store, small, "small", "upload")

        first_times, resync_times, nocache_times = [], [], []
        for round_ in range(ROUNDS):
            dest = tmp / f"sync-{round_}"
            first_times.append(_timed(download, store, PREFIX, dest, incremental=True))
            resync_times.append(_timed(download, store, PREFIX, dest, incremental=True))
            md5_cache_path(dest).unlink()
            nocache_times.append(_timed(download, store, PREFIX, dest, incremental=True))
            shutil.rmtree(dest)

        return {
            "staging_download_ratio": big_down["ratio"],
            "staging_upload_ratio": big_up["ratio"],
            "staging_small_files_download_ratio": small_down["ratio"],
            "staging_small_files_upload_ratio": small_up["ratio"],
            "staging_incremental_ratio": statistics.median(
                r / f for r, f in zip(resync_times, first_times, strict=True)
            ),
            "staging_incremental_nocache_ratio": statistics.median(
                n / f for n, f in zip(nocache_times, first_times, strict=True)
            ),
            "staging_azbai_download_mb_s": total_mb / big_down["azbai_s"],
            "staging_plain_download_mb_s": total_mb / big_down["plain_s"],
            "staging_plain_best_threads": big_down["best_threads"],
            "staging_plain_best_tuned": big_down["best_tuned"],
            "staging_azbai_upload_mb_s": total_mb / big_up["azbai_s"],
            "staging_plain_upload_mb_s": total_mb / big_up["plain_s"],
            "staging_small_azbai_download_files_s": SMALL_FILES / small_down["azbai_s"],
            "staging_small_plain_download_files_s": SMALL_FILES / small_down["plain_s"],
            "staging_small_azbai_upload_files_s": SMALL_FILES / small_up["azbai_s"],
            "staging_small_plain_upload_files_s": SMALL_FILES / small_up["plain_s"],
            "staging_small_mb": small_mb,
            "staging_first_download_s": statistics.median(first_times),
            "staging_resync_s": statistics.median(resync_times),
        }
    finally:
        emulator.stop()
        shutil.rmtree(tmp, ignore_errors=True)
