"""Copy directory trees between the local disk and a :class:`~azbai.local.stores.Store`, in parallel and verified.

:func:`upload` sends a file, or the files under a directory, to ``destination_prefix/<relative path>``; :func:`download`
fetches the files under a prefix into a directory (a file named exactly by the prefix lands as its base name). Every
file is checked by MD5 by the store; a file that fails is tried once more, then the transfer stops with a
:class:`~azbai.errors.TransferError` that names it. A download never leaves a partial file behind: each file is
written to a ``.azbai-*.part`` file beside its target and renamed only once it verifies.

Incremental mode skips files whose size and MD5 already match. For downloads, the MD5s of the local files are cached
beside (never inside) the destination, in ``.<destination name>.azbai-md5cache.json`` (:func:`md5_cache_path`),
keyed by relative path and trusted while size, mtime_ns and inode are unchanged, so an unchanged re-sync costs a
listing and a ``stat`` per file rather than hashing every byte. azbai keeps no file of its own inside a data
directory, so every file is transferred whatever its name (``.azbai-notes.txt`` included).
"""

from __future__ import annotations

import logging
import stat
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from azbai.errors import StorageError, TransferError
from azbai.local.stores import (
    AZBAI_FILE_PREFIX,
    Entry,
    Md5Cache,
    Store,
    check_path,
    check_prefix,
    file_md5,
    iter_local_files,
)

log = logging.getLogger(__name__)

#: ``progress(done_bytes, total_bytes, done_files, total_files)``, called from the calling thread after each file.
Progress = Callable[[int, int, int, int], None]

MD5_CACHE_SUFFIX = f"{AZBAI_FILE_PREFIX}md5cache.json"


def md5_cache_path(destination: Path) -> Path:
    """Where an incremental download into ``destination`` caches local MD5s: beside it, not inside it."""
    destination = Path(destination).absolute()
    return destination.parent / f".{destination.name}{MD5_CACHE_SUFFIX}"


#: Files in flight at once, by direction (measured on 2 cores, benchmarks/bench_staging.py and docs/performance.md).
#: An upload mostly waits on Azurite, which hashes and stores what it receives (4-5 ms of its CPU per MB against
#: 1.5 of ours), so more requests in flight keep it busy: 16 beat 8. For downloads, whose CPU is on our side (the
#: SDK's Python per request and the MD5 of every byte), a focused A/B put 8 workers level with 16 (within 5%), but
#: in four of five before/after pairs of the full benchmark (8 after, 16 before) 16 did better on 20 KB files: 16 stays.
UPLOAD_WORKERS = 16
DOWNLOAD_WORKERS = 16


@dataclass(frozen=True)
class TransferReport:
    """What a transfer did: files and bytes moved and skipped (incremental mode), and how long it took."""

    files_transferred: int
    files_skipped: int
    bytes_transferred: int
    bytes_skipped: int
    seconds: float

    @property
    def files(self) -> int:
        """Files considered (transferred + skipped)."""
        return self.files_transferred + self.files_skipped

    @property
    def throughput_mb_s(self) -> float:
        """Bytes transferred per second, in MB/s (10^6 bytes)."""
        return self.bytes_transferred / self.seconds / 1e6 if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class _Job:
    label: str
    size: int
    run: Callable[[], bool]  # True when transferred, False when skipped


def upload(
    source: Path,
    store: Store,
    destination_prefix: str = "",
    *,
    incremental: bool = False,
    workers: int = UPLOAD_WORKERS,
    progress: Progress | None = None,
) -> TransferReport:
    """Upload a file, or every file under a directory, to ``store`` under ``destination_prefix``."""
    started = time.perf_counter()
    source = Path(source)
    prefix = _dir_prefix(destination_prefix)
    if source.is_file():
        files = [(source, prefix + source.name)]
    elif source.is_dir():
        files = [(path, prefix + rel) for path, rel in iter_local_files(source)]
    else:
        raise StorageError(f"{source}: no such file or directory")
    remote: dict[str, Entry] = {}
    if incremental and files and store.root_exists():
        remote = {e.path: e for e in store.list(prefix)}

    def job(local: Path, path: str) -> _Job:
        size = _size(local)

        def run() -> bool:
            known = remote.get(path)
            if known is not None and known.size == size and known.md5 == _md5_or_fail(local):
                return False
            _with_one_retry(lambda: store.upload_file(local, path), path)
            return True

        return _Job(path, size, run)

    jobs = [job(local, path) for local, path in files]
    try:
        report = _run(jobs, workers, progress, started)
    finally:
        store.flush()
    log.info(
        "uploaded %d file(s) to %s (%d skipped) in %.2f s",
        report.files_transferred, store.url_for(prefix), report.files_skipped, report.seconds,
    )  # fmt: skip
    return report


def download(
    store: Store,
    prefix: str,
    destination: Path,
    *,
    incremental: bool = False,
    workers: int = DOWNLOAD_WORKERS,
    progress: Progress | None = None,
) -> TransferReport:
    """Download the files under ``prefix`` (a directory of the store; ``""`` for all) into ``destination``."""
    started = time.perf_counter()
    destination = Path(destination)
    base = _dir_prefix(prefix)
    exact = base[:-1]
    targets: dict[str, Entry] = {}
    for entry in store.list(exact):
        if base and entry.path == exact:
            rel = exact.rpartition("/")[2]
        elif entry.path.startswith(base):
            rel = entry.path[len(base) :]
        else:
            continue  # "data2/x" when asked for "data"
        try:
            check_path(rel)
        except StorageError as exc:
            raise TransferError(f"{store.url_for(entry.path)} cannot be downloaded: {exc}") from exc
        targets[rel] = entry
    _check_no_file_dir_clash(targets, store)
    if not targets:
        log.warning("nothing to download under %s", store.url_for(base))
    try:
        destination.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TransferError(f"cannot create {destination}: {exc.strerror or exc}") from exc
    cache = Md5Cache(md5_cache_path(destination)) if incremental else None

    def job(rel: str, entry: Entry) -> _Job:
        target = destination / rel

        def run() -> bool:
            if cache is not None and entry.md5 is not None and _local_matches(target, rel, entry, cache):
                return False
            got = _with_one_retry(lambda: store.download_file(entry.path, target), entry.path)
            if cache is not None and got.md5 is not None:
                try:
                    cache.put(rel, target.stat(), got.md5)
                except OSError:
                    cache.discard(rel)
            return True

        return _Job(entry.path, entry.size, run)

    jobs = [job(rel, entry) for rel, entry in sorted(targets.items())]
    try:
        report = _run(jobs, workers, progress, started)
    finally:
        if cache is not None:
            cache.save()
    log.info(
        "downloaded %d file(s) from %s (%d skipped) in %.2f s",
        report.files_transferred, store.url_for(base), report.files_skipped, report.seconds,
    )  # fmt: skip
    return report


def _run(jobs: list[_Job], workers: int, progress: Progress | None, started: float) -> TransferReport:
    total_bytes = sum(j.size for j in jobs)
    done_bytes = done_files = moved_files = moved_bytes = 0
    if progress is not None:
        progress(0, total_bytes, 0, len(jobs))
    if jobs:
        with ThreadPoolExecutor(
            max_workers=max(1, min(workers, len(jobs))), thread_name_prefix="azbai-transfer"
        ) as pool:
            futures: dict[Future[bool], _Job] = {pool.submit(j.run): j for j in jobs}
            try:
                for future in as_completed(futures):
                    job = futures[future]
                    if future.result():
                        moved_files += 1
                        moved_bytes += job.size
                    done_files += 1
                    done_bytes += job.size
                    if progress is not None:
                        progress(done_bytes, total_bytes, done_files, len(jobs))
            except BaseException:
                for pending in futures:
                    pending.cancel()
                pool.shutdown(wait=True)
                failed = [
                    futures[f].label for f in futures if f.done() and not f.cancelled() and f.exception()
                ]
                if len(failed) > 1:
                    log.error("%d files failed: %s", len(failed), ", ".join(failed[:20]))
                raise
    return TransferReport(
        files_transferred=moved_files,
        files_skipped=len(jobs) - moved_files,
        bytes_transferred=moved_bytes,
        bytes_skipped=total_bytes - moved_bytes,
        seconds=time.perf_counter() - started,
    )


def _with_one_retry(attempt: Callable[[], Entry], label: str) -> Entry:
    try:
        return attempt()
    except TransferError as exc:
        log.warning("%s: %s; trying once more", label, exc)
        return attempt()


def _local_matches(target: Path, rel: str, entry: Entry, cache: Md5Cache) -> bool:
    try:
        st = target.stat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise TransferError(f"cannot read {target}: {exc.strerror or exc}") from exc
    if st.st_size != entry.size or not stat.S_ISREG(st.st_mode):  # the stat above answers both: no second one
        return False
    md5 = cache.get(rel, st)
    if md5 is None:
        md5 = _md5_or_fail(target)
        cache.put(rel, st, md5)
    return md5 == entry.md5


def _md5_or_fail(path: Path) -> str:
    try:
        return file_md5(path)
    except OSError as exc:
        raise TransferError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise TransferError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _dir_prefix(prefix: str) -> str:
    """``"a/b"`` or ``"a/b/"`` → ``"a/b/"``; ``""`` stays ``""``."""
    stripped = check_prefix(prefix).rstrip("/")
    return f"{stripped}/" if stripped else ""


def _check_no_file_dir_clash(targets: dict[str, Entry], store: Store) -> None:
    """A blob ``a`` and a blob ``a/b`` cannot both become local files."""
    dirs = {rel.rpartition("/")[0] for rel in targets}
    parents = {"/".join(d.split("/")[:i]) for d in dirs if d for i in range(1, d.count("/") + 2)}
    clashes = sorted(parents & targets.keys())
    if clashes:
        raise TransferError(
            f"{store.url_for(clashes[0])} is both a file and a folder of other files; it cannot be downloaded as a tree"
        )
