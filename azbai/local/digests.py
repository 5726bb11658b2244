"""MD5s of many buffers at once: what lets a verified transfer keep up with an unverified one.

MD5 is a chain of dependent steps: one buffer costs ~1.2 ms a MB whatever the code (OpenSSL's here), which is a
third of what a 1 MB download costs the client in all. ``azbai.local.md5x`` (C, built by ``pip install``) hashes up
to 32 buffers in the time of about three: one per lane of AVX-512, in two groups of 16 (AVX2: two groups of 8 a
pass, 32 buffers in the time of about six). A transfer's worker threads hand their buffers to one
:class:`Md5Batcher`, which hashes what has gathered together.

Without the extension (no C compiler when azbai was installed, another CPU) everything here falls back to hashlib,
one buffer at a time: the same digests, at hashlib's speed.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future

log = logging.getLogger(__name__)

try:
    from azbai.local.md5x import LANES as _CPU_LANES
    from azbai.local.md5x import md5_many as _md5_many
except ImportError:  # not built: hashlib alone
    _CPU_LANES = 0


def _lanes(setting: str | None) -> int:
    """The lanes to use: the CPU's, or fewer where ``AZBAI_MD5_LANES`` says (``0``: hashlib alone; ``8``: AVX2
    on an AVX-512 CPU); anything else is the CPU's."""
    if setting is None or not setting.strip().isdigit():
        return _CPU_LANES
    wanted = int(setting)
    if wanted == 0 or (wanted == 8 and _CPU_LANES >= 8):
        return wanted
    return _CPU_LANES


#: SIMD lanes (16 with AVX-512, 8 with AVX2); 0 without the extension.
LANES: int = _lanes(os.environ.get("AZBAI_MD5_LANES"))
#: Buffers one pass takes: with AVX-512 two groups of 16 whose steps interleave (32 cost ~1.5 times 16), else LANES.
BATCH: int = 32 if LANES == 16 else LANES


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_HEAP_LIMIT = 1 << 30
_heap_kept: bool | None = None
_heap_lock = threading.Lock()


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed blocks for the next ones instead of unmapping them (once a process).

    A batched transfer holds some dozens of 1 MB responses while their MD5s gather, and frees them in another
    thread than the one that made them: glibc then gives the memory back (trims the heap) and the next responses
    come in fresh zero-filled pages, ~15,000 page faults a 200 MB download against ~300 for a plain SDK loop, which
    costs more than the batching saves. Raised mmap and trim thresholds keep the pages. It is process-wide, and the
    process keeps its peak heap (tens of MB for a transfer); ``AZBAI_KEEP_HEAP=0`` leaves malloc alone. Returns
    whether it took effect: False without glibc (macOS, musl) or with AZBAI_KEEP_HEAP=0.
    """
    global _heap_kept
    with _heap_lock:
        if _heap_kept is None:
            _heap_kept = False
            if os.environ.get("AZBAI_KEEP_HEAP", "1").strip().lower() not in ("0", "false", "no"):
                try:
                    libc = ctypes.CDLL(None)
                    if hasattr(libc, "gnu_get_libc_version"):  # glibc's mallopt, not another libc's
                        # newer glibc takes any threshold; older ones cap it at 32 MiB
                        mmap_ok = libc.mallopt(_M_MMAP_THRESHOLD, _HEAP_LIMIT) or libc.mallopt(
                            _M_MMAP_THRESHOLD, 32 << 20
                        )
                        _heap_kept = bool(mmap_ok and libc.mallopt(_M_TRIM_THRESHOLD, _HEAP_LIMIT))
                except (OSError, AttributeError, TypeError):  # TypeError: no CDLL(None) (Windows)
                    pass
        return _heap_kept


def md5_hex_many(buffers: Sequence[bytes | bytearray | memoryview]) -> list[str]:
    """The MD5 (hex) of each buffer, the SIMD lanes sharing the work when there are several."""
    if LANES and len(buffers) > 1:
        return [digest.hex() for digest in _md5_many(buffers, LANES)]
    return [hashlib.md5(buffer, usedforsecurity=False).hexdigest() for buffer in buffers]


class Md5Batcher:
    """One thread that hashes the buffers handed to it by others, up to :data:`BATCH` at a time.

    :meth:`submit` returns at once with a future of the hex digest. The thread starts a pass as soon as ``fill``
    buffers wait, or ``wait`` seconds after the first of them arrived, so a worker that blocks on its future waits
    at most that long for company; a worker that goes on with other work (a download handing over its file) lets
    the passes fill. At most ``limit`` buffers wait at once: :meth:`submit` blocks beyond that, so memory stays
    bounded when the hashing falls behind. Without the extension, futures are resolved in the calling thread.
    """

    def __init__(self, *, fill: int | None = None, wait: float = 0.02, limit: int | None = None) -> None:
        self.lanes = LANES
        self.fill = max(1, min(fill or BATCH or 1, BATCH or 1))
        self.wait = wait
        self._room = threading.BoundedSemaphore(limit or 4 * max(self.fill, 1))
        self._lock = threading.Condition()
        self._queue: list[tuple[bytes | bytearray | memoryview, Future[str]]] = []
        self._first_at = 0.0
        self._flushed = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def submit(self, data: bytes | bytearray | memoryview) -> Future[str]:
        """A future of ``data``'s MD5 (hex); ``data`` must not change until it is resolved."""
        future: Future[str] = Future()
        if not self.lanes:
            future.set_result(hashlib.md5(data, usedforsecurity=False).hexdigest())
            return future
        self._room.acquire()
        with self._lock:
            if self._closed:
                self._room.release()
                raise RuntimeError("Md5Batcher is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="azbai-md5", daemon=True)
                self._thread.start()
            if not self._queue:
                self._first_at = time.monotonic()
                self._lock.notify()  # the thread starts the clock of this batch
            self._queue.append((data, future))
            if len(self._queue) == self.fill:
                self._lock.notify()
        return future

    def flush(self) -> None:
        """Hash what is waiting now, and from now on whatever comes, without waiting for company."""
        with self._lock:
            self._flushed = True
            self._lock.notify()

    def close(self) -> None:
        """Hash what is waiting, then stop the thread."""
        with self._lock:
            self._closed = True
            self._lock.notify()
            thread = self._thread
        if thread is not None:
            thread.join()

    def __enter__(self) -> Md5Batcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self) -> None:
        while True:
            with self._lock:
                while True:
                    if self._queue and (self._closed or self._flushed or len(self._queue) >= self.fill):
                        break
                    if not self._queue:
                        if self._closed:
                            return
                        self._lock.wait()
                        continue
                    left = self._first_at + self.wait - time.monotonic()
                    if left <= 0:
                        break
                    self._lock.wait(left)
                batch, self._queue = self._queue[:BATCH], self._queue[BATCH:]
                if self._queue:
                    self._first_at = time.monotonic()
            try:
                digests = md5_hex_many([data for data, _ in batch])
            except BaseException as exc:  # MemoryError, say: every waiter learns of it
                for _, future in batch:
                    future.set_exception(exc)
            else:
                for (_, future), digest in zip(batch, digests, strict=True):
                    future.set_result(digest)
            finally:
                for _ in batch:
                    self._room.release()
