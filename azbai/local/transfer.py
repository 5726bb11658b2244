"""Copy directory trees between the local disk and a :class:`~azbai.local.stores.Store`, in parallel and verified.

:func:`upload` sends a file, or the files under a directory, to ``destination_prefix/<relative path>``; :func:`download`
fetches the files under a prefix into a directory (a file named exactly by the prefix lands as its base name). Every
file is checked by MD5 by the store; a file that fails is tried once more, then the transfer stops with a
:class:`~azbai.errors.TransferError` that names it. A download never leaves a partial file behind: each file is
written to a part file beside its target and put in place only once it verifies.

The MD5s of files from 256 KiB to 8 MiB are computed several at a time where ``azbai.local.md5x`` is built (one file per
SIMD lane, :mod:`azbai.local.digests`): a download's worker hands its file (fetched, written, not yet in place) to
an :class:`~azbai.local.digests.Md5Batcher` and goes on with the next, and the file is verified and put in place
when its batch is hashed; an upload's files are read and hashed ahead of the workers, which need the MD5 before they
send (Content-MD5).

Incremental mode skips files whose size and MD5 already match. For downloads, the MD5s of the local files are cached
beside (never inside) the destination, in ``.<destination name>.azbai-md5cache.json`` (:func:`md5_cache_path`),
keyed by relative path and trusted while size, mtime_ns and inode are unchanged, so an unchanged re-sync costs a
listing and a ``stat`` per file rather than hashing every byte. azbai keeps no file of its own inside a data
directory, so every file is transferred whatever its name (``.azbai-notes.txt`` included).
"""

from __future__ import annotations

import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azbai.errors import StorageError, TransferError
from azbai.local.digests import BATCH, LANES, Md5Batcher, keep_freed_memory, md5_hex_many
from azbai.local.stores import (
    AZBAI_FILE_PREFIX,
    BATCHED_MD5_MIN,
    SMALL_UPLOAD,
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
#: SDK's Python per request), 8 workers beat 16 on a quiet machine: 2,000 x 20 KB files at 0.99 of the best plain
#: pool against 0.94, 1 MB files level (7 rounds each, /tmp A/B of benchmarks.bench_staging's contestants); more
#: threads only contend for the GIL. (Under load from other suites 16 had looked better; that was its noise.)
UPLOAD_WORKERS = 16
DOWNLOAD_WORKERS = 8


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
    #: True when transferred, False when skipped, or a future of that when the transfer finishes in another
    #: thread (a download whose MD5 is in a batch); such a future's TransferError is retried once with ``retry``
    run: Callable[[], bool | Future[bool]]
    retry: Callable[[], bool] | None = None


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
    sizes = {local: _size(local) for local, _ in files}
    # Files of a batchable size are read and hashed ahead of the workers, several in each SIMD pass.
    batchable = {local: size for local, size in sizes.items() if _batchable(size)}
    ahead = _ReadAhead(batchable) if LANES and len(batchable) > 1 else None

    def job(local: Path, path: str) -> _Job:
        size = sizes[local]

        def run() -> bool:
            known = remote.get(path)
            read = ahead.take(local) if ahead is not None else None
            if read is None:
                if known is not None and known.size == size and known.md5 == _md5_or_fail(local):
                    return False
                _with_one_retry(lambda: store.upload_file(local, path), path)
                return True
            data, digest = read
            assert ahead is not None  # read ahead, so there is a reader to give the buffer back to
            try:
                if known is not None and known.size == len(data) and known.md5 == digest:
                    return False
                _with_one_retry(lambda: store.put_bytes(path, data, digest), path)
                return True
            finally:
                ahead.done(data)

        return _Job(path, size, run)

    jobs = [job(local, path) for local, path in files]
    try:
        report = _run(jobs, workers, progress, started, stop=ahead.close if ahead is not None else None)
    finally:
        if ahead is not None:
            ahead.close()
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
    # The workers hand their files over and go on downloading: a batch fills with the files of several rounds.
    digests = _batcher() if sum(_batchable(e.size) for e in targets.values()) > 1 else None

    def job(rel: str, entry: Entry) -> _Job:
        target = destination / rel

        def done(got: Entry) -> bool:
            if cache is not None and got.md5 is not None:
                try:
                    cache.put(rel, target.stat(), got.md5)
                except OSError:
                    cache.discard(rel)
            return True

        def run() -> bool | Future[bool]:
            if cache is not None and entry.md5 is not None and _local_matches(target, rel, entry, cache):
                return False
            if digests is None:
                return done(_with_one_retry(lambda: store.download_file(entry.path, target), entry.path))
            try:
                pending = store.start_download(entry.path, target, digests)
            except TransferError as exc:
                log.warning("%s: %s; trying once more", entry.path, exc)
                return retry()
            return _then(pending, done)

        def retry() -> bool:
            return done(store.download_file(entry.path, target))

        return _Job(entry.path, entry.size, run, retry)

    jobs = [job(rel, entry) for rel, entry in sorted(targets.items())]
    try:
        report = _run(jobs, workers, progress, started, digests)
    finally:
        if digests is not None:
            digests.close()
        if cache is not None:
            cache.save()
    log.info(
        "downloaded %d file(s) from %s (%d skipped) in %.2f s",
        report.files_transferred, store.url_for(base), report.files_skipped, report.seconds,
    )  # fmt: skip
    return report


def _batcher() -> Md5Batcher | None:
    """A batcher of MD5s for a download, where the SIMD lanes (azbai.local.md5x) are there to share the work.

    A pass waits up to 80 ms for a full batch (32 files with AVX-512): at ~400 files/s that is most of one, and
    nothing but memory waits meanwhile (the workers go on downloading; at most 2 batches of files are held). Once
    the pool has handed everything over, no batch waits at all (:meth:`Md5Batcher.flush`).
    """
    if not LANES:
        return None
    keep_freed_memory()
    return Md5Batcher(fill=BATCH, wait=0.08, limit=2 * BATCH)


def _batchable(size: int) -> bool:
    return BATCHED_MD5_MIN <= size <= SMALL_UPLOAD


class _Buffers:
    """Read buffers that outlive an upload, for the next one's read-ahead; at most ``limit`` bytes of them kept.

    A buffer the read-ahead thread allocated afresh for every file (``read_bytes``) came from that thread's glibc
    arena, whose memory glibc hands back to the kernel as the workers free the files: the next files then arrive in
    fresh zero-filled pages, one page fault per 4 KiB read (35,000-51,000 an upload of 200 x 1 MB, against ~400
    for a plain SDK pool; ``keep_freed_memory``'s thresholds do not hold a thread arena's heaps). Buffers that are
    reused fault once, in the first upload of a process. Sizes are rounded up to an eighth of their power of two,
    so that files of about one size share buffers. A process keeps them (at most ~96 MB) as it keeps its peak heap;
    ``AZBAI_KEEP_HEAP=0`` keeps neither.
    """

    def __init__(self, limit: int) -> None:
        self._free: dict[int, list[bytearray]] = {}
        self._kept = 0
        self._limit = limit
        self._lock = threading.Lock()

    @staticmethod
    def capacity(size: int) -> int:
        step = 1 << max(12, size.bit_length() - 4)
        return -(-max(size, 1) // step) * step

    def get(self, size: int) -> bytearray:
        capacity = self.capacity(size)
        with self._lock:
            free = self._free.get(capacity)
            if free:
                self._kept -= capacity
                return free.pop()
        return bytearray(capacity)

    def put(self, buffer: bytearray) -> None:
        with self._lock:
            if self._kept + len(buffer) <= self._limit:
                self._free.setdefault(len(buffer), []).append(buffer)
                self._kept += len(buffer)


#: The read-ahead's window, and the buffers kept between uploads: the window, and the files the workers hold.
_READ_AHEAD_WINDOW = 64 << 20
_KEEP = os.environ.get("AZBAI_KEEP_HEAP", "1").strip().lower() not in ("0", "false", "no")
_BUFFERS = _Buffers(_READ_AHEAD_WINDOW + UPLOAD_WORKERS * (2 << 20) if _KEEP else 0)


class _ReadAhead:
    """Reads upload sources in the order the workers take them, and hashes them ``BATCH`` at a time, ahead of them.

    An upload needs its MD5 before it sends a byte (Content-MD5), so a worker cannot hand its file over the way a
    download does; one thread reading ahead can. At most ``window`` bytes are read and not yet taken. A file that
    cannot be read is the error of the worker that takes it. The files are read into buffers of :data:`_BUFFERS`,
    which a worker gives back (:meth:`done`) once it has sent its file.
    """

    def __init__(self, sizes: dict[Path, int], window: int = _READ_AHEAD_WINDOW) -> None:
        """``sizes``: the files to read ahead, in the order the workers take them, with their sizes."""
        self._reads: dict[Path, Future[tuple[memoryview | bytes, str]]] = {path: Future() for path in sizes}
        self._buffers: dict[int, bytearray] = {}  # id of a handed-out view -> its buffer
        self._sizes = sizes
        self._order = list(self._reads)
        self._window = window
        self._held = 0
        self._lock = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._serve, name="azbai-read-ahead", daemon=True)
        if sizes:
            keep_freed_memory()
            self._thread.start()

    def take(self, path: Path) -> tuple[memoryview | bytes, str] | None:
        """``path``'s bytes and MD5 (hex), or ``None`` when it is not read ahead; raises TransferError when it
        could not be read. The bytes are the reader's until :meth:`done` is called with them."""
        future = self._reads.get(path)
        if future is None:
            return None
        data, digest = future.result()
        with self._lock:
            self._held -= len(data)
            self._lock.notify()
        return data, digest

    def done(self, data: memoryview | bytes) -> None:
        """Take back the buffer behind ``data`` (from :meth:`take`), once nothing reads it any more."""
        with self._lock:
            buffer = self._buffers.pop(id(data), None)
        if buffer is not None:
            _BUFFERS.put(buffer)

    def close(self) -> None:
        """Stop reading; a worker still waiting for a file that was not read gets a TransferError (the transfer is
        failing: a job it waits behind was cancelled, and would never have taken its bytes off the window)."""
        with self._lock:
            self._stop = True
            self._lock.notify()
        if self._thread.is_alive():
            self._thread.join()
        for path, future in self._reads.items():
            if not future.done():
                future.set_exception(TransferError(f"{path} was not uploaded: the transfer stopped"))

    def _serve(self) -> None:
        batch: list[tuple[Path, memoryview | bytes]] = []
        for path in self._order:
            size = self._sizes[path]
            with self._lock:
                fits = self._held == 0 or self._held + size <= self._window
            if batch and (len(batch) == BATCH or not fits):
                self._resolve(batch)  # before waiting for room: the room comes from these files, once taken
                batch = []
            with self._lock:
                while self._held > 0 and self._held + size > self._window and not self._stop:
                    self._lock.wait()
                if self._stop:
                    return
            try:
                data = self._read(path, size)
            except OSError as exc:
                self._reads[path].set_exception(TransferError(f"cannot read {path}: {exc.strerror or exc}"))
                continue
            with self._lock:
                self._held += len(data)
            batch.append((path, data))
        if batch:
            self._resolve(batch)

    def _read(self, path: Path, size: int) -> memoryview | bytes:
        """``path``'s bytes, in a buffer of :data:`_BUFFERS` while it still has the ``size`` it had when the
        upload listed it (else all of it, as it is now)."""
        buffer = _BUFFERS.get(size)
        with open(path, "rb", buffering=0) as handle:
            view = memoryview(buffer)[:size]
            got = 0
            while got < size:
                n = handle.readinto(view[got:])
                if not n:
                    break
                got += n
            if got == size and not handle.read(1):
                with self._lock:
                    self._buffers[id(view)] = buffer
                return view
        _BUFFERS.put(buffer)  # the file changed size since it was listed
        return path.read_bytes()

    def _resolve(self, batch: list[tuple[Path, memoryview | bytes]]) -> None:
        try:
            digests = md5_hex_many([data for _, data in batch])
        except BaseException as exc:
            for path, _ in batch:
                self._reads[path].set_exception(exc)
            return
        for (path, data), digest in zip(batch, digests, strict=True):
            self._reads[path].set_result((data, digest))


def _then(pending: Future[Entry], done: Callable[[Entry], bool]) -> Future[bool]:
    """A future of ``done(entry)`` once ``pending`` gives its entry (or of its error)."""
    result: Future[bool] = Future()

    def chain(future: Future[Entry]) -> None:
        try:
            result.set_result(done(future.result()))
        except BaseException as exc:
            result.set_exception(exc)

    pending.add_done_callback(chain)
    return result


def _run(
    jobs: list[_Job],
    workers: int,
    progress: Progress | None,
    started: float,
    digests: Md5Batcher | None = None,
    stop: Callable[[], None] | None = None,
) -> TransferReport:
    """Run the jobs on ``workers`` threads; ``digests``: the batcher the jobs hand files to; ``stop``: called when
    the transfer fails, before it waits for the running jobs (so that none of them waits on a cancelled one)."""
    total_bytes = sum(j.size for j in jobs)
    done_bytes = done_files = moved_files = moved_bytes = 0
    if progress is not None:
        progress(0, total_bytes, 0, len(jobs))
    if jobs:
        # Finished futures come through one queue, in the order they finish: waiting on all of them again after
        # each (concurrent.futures.wait) would cost time in proportion to the files left, for every file.
        finished: queue.SimpleQueue[tuple[Future[Any], _Job]] = queue.SimpleQueue()
        pending: dict[Future[Any], _Job] = {}
        handed: set[Future[Any]] = set()  # files the pool is done with, waiting on their MD5

        def track(future: Future[Any], job: _Job) -> None:
            pending[future] = job
            future.add_done_callback(lambda f: finished.put((f, job)))

        with ThreadPoolExecutor(
            max_workers=max(1, min(workers, len(jobs))), thread_name_prefix="azbai-transfer"
        ) as pool:
            for j in jobs:
                track(pool.submit(j.run), j)
            future: Future[Any] | None = None
            try:
                while pending:
                    if digests is not None and len(handed) == len(pending):
                        digests.flush()  # the pool has nothing left to hand over: no batch waits for company
                    future, job = finished.get()
                    del pending[future]
                    if future in handed:
                        handed.discard(future)
                        try:
                            result = future.result()
                        except TransferError as exc:
                            if job.retry is None:
                                raise
                            log.warning("%s: %s; trying once more", job.label, exc)
                            track(pool.submit(job.retry), job)
                            continue
                    else:
                        result = future.result()
                        if isinstance(result, Future):
                            handed.add(result)
                            track(result, job)
                            continue
                    if result:
                        moved_files += 1
                        moved_bytes += job.size
                    done_files += 1
                    done_bytes += job.size
                    if progress is not None:
                        progress(done_bytes, total_bytes, done_files, len(jobs))
            except BaseException:
                for left in pending:
                    left.cancel()
                if stop is not None:
                    stop()
                pool.shutdown(wait=True)
                if digests is not None:
                    digests.close()  # what was handed over is finished (or discarded) before this returns
                if future is not None:
                    pending.setdefault(future, job)  # the one that failed, with those that failed meanwhile
                failed = [
                    job.label
                    for f, job in pending.items()
                    if f.done() and not f.cancelled() and f.exception()
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
