"""MD5s of many buffers at once (azbai.local.md5x, the C extension) and the batcher that gathers them from threads."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sysconfig
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from azbai.local import digests
from azbai.local.digests import Md5Batcher, md5_hex_many


def _cpu_has(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo") as handle:
            return any(line.startswith("flags") and flag in line.split() for line in handle)
    except OSError:
        return False


def _extension():  # type: ignore[no-untyped-def]
    """The built extension; where a C compiler is at hand, `pip install` must have built it."""
    try:
        from azbai.local import md5x
    except ImportError:
        if shutil.which(
            sysconfig.get_config_var("CC").split()[0] if sysconfig.get_config_var("CC") else "cc"
        ):
            pytest.fail(
                "azbai.local.md5x was not built, though a C compiler is here (pip install -e . builds it)"
            )
        pytest.skip("no C compiler: azbai hashes with hashlib alone")
    return md5x


LENGTHS = [0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 4096, 65_537, 1 << 20]


def test_the_extension_uses_the_cpu_it_has() -> None:
    md5x = _extension()
    expected = 16 if _cpu_has("avx512f") else 8 if _cpu_has("avx2") else 0
    assert expected == md5x.LANES


@pytest.mark.parametrize("width", [16, 8])
def test_every_length_and_count_gives_hashlibs_digest(width: int) -> None:
    md5x = _extension()
    if width > md5x.LANES:
        pytest.skip(f"no {width}-lane code on this CPU")
    rng = random.Random(width)
    # lanes of other lengths than their neighbours' (one finishes while others go on), more buffers than lanes
    for count in [0, 1, 2, width - 1, width, width + 1, 2 * width, 2 * width + 3]:
        buffers = [os.urandom(rng.choice([*LENGTHS, rng.randrange(5000)])) for _ in range(count)]
        assert md5x.md5_many(buffers, width) == [hashlib.md5(b).digest() for b in buffers]
    # every padding case against every other: each length in every lane position of both interleaved groups
    same = [os.urandom(n) for n in LENGTHS[: 2 * width]]
    for shift in range(len(same)):
        rotated = same[shift:] + same[:shift]
        assert md5x.md5_many(rotated, width) == [hashlib.md5(b).digest() for b in rotated]


def test_any_contiguous_buffer_is_taken_and_others_are_refused() -> None:
    md5x = _extension()
    data = os.urandom(3000)
    as_types = [data, bytearray(data), memoryview(data)[100:2100]]
    assert md5x.md5_many(as_types) == [hashlib.md5(bytes(b)).digest() for b in as_types]
    with pytest.raises(BufferError):
        md5x.md5_many([memoryview(data)[::2]])  # not contiguous
    with pytest.raises(TypeError):
        md5x.md5_many([data, "text"])
    with pytest.raises(TypeError):
        md5x.md5_many(42)
    with pytest.raises(ValueError, match="lanes"):
        md5x.md5_many([data], 4)


def test_the_gil_is_released_while_hashing() -> None:
    md5x = _extension()
    buffers = [os.urandom(8 << 20) for _ in range(md5x.LANES)]
    stamps: list[float] = []
    done = threading.Event()

    def tick() -> None:  # a pure-Python loop: it runs only while it holds the GIL
        while not done.is_set():
            stamps.append(time.perf_counter())
            time.sleep(0)

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        time.sleep(0.01)
        started = time.perf_counter()
        md5x.md5_many(buffers)
        ended = time.perf_counter()
    finally:
        done.set()
        ticker.join()
    assert ended - started > 0.01  # long enough for the ticker to have been switched in
    inside = [t for t in stamps if started + 0.002 < t < ended - 0.002]
    assert inside, "no other thread ran while md5_many hashed: it held the GIL"


def test_md5_hex_many_without_the_extension_is_hashlib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digests, "LANES", 0)
    buffers = [os.urandom(n) for n in (0, 10, 100_000)]
    assert md5_hex_many(buffers) == [hashlib.md5(b).hexdigest() for b in buffers]


@pytest.mark.parametrize(
    ("setting", "lanes"), [(None, "cpu"), ("0", 0), ("8", 8), ("4", "cpu"), ("sixteen", "cpu"), ("", "cpu")]
)
def test_azbai_md5_lanes_turns_lanes_down_only(setting: str | None, lanes: int | str) -> None:
    cpu = digests._CPU_LANES
    expected = cpu if lanes == "cpu" else (lanes if cpu >= 8 or lanes == 0 else cpu)
    assert digests._lanes(setting) == expected


def test_the_batcher_gives_each_thread_its_own_digest() -> None:
    if not digests.LANES:
        pytest.skip("no SIMD lanes: the batcher hashes in the calling thread")
    buffers = [os.urandom(random.randrange(200_000)) for _ in range(200)]
    with Md5Batcher(wait=0.005) as batcher, ThreadPoolExecutor(12) as pool:
        got = list(pool.map(lambda b: batcher.submit(b).result(timeout=30), buffers))
    assert got == [hashlib.md5(b).hexdigest() for b in buffers]


def test_a_lone_buffer_waits_at_most_the_wait_and_a_full_batch_not_at_all(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not digests.LANES:
        pytest.skip("no SIMD lanes")
    sizes: list[int] = []
    real = digests.md5_hex_many
    monkeypatch.setattr(digests, "md5_hex_many", lambda bufs: sizes.append(len(bufs)) or real(bufs))
    with Md5Batcher(fill=4, wait=0.3) as batcher:
        started = time.perf_counter()
        assert batcher.submit(b"a").result(timeout=5) == hashlib.md5(b"a").hexdigest()
        lone = time.perf_counter() - started
        started = time.perf_counter()
        futures = [batcher.submit(bytes([i])) for i in range(4)]
        [f.result(timeout=5) for f in futures]
        full = time.perf_counter() - started
    assert 0.25 < lone < 3 and full < 0.25
    assert sizes == [1, 4]


def test_flush_and_close_hash_what_waits_without_waiting() -> None:
    if not digests.LANES:
        pytest.skip("no SIMD lanes")
    batcher = Md5Batcher(fill=8, wait=60)
    first = batcher.submit(b"x")
    time.sleep(0.05)
    assert not first.done()  # waiting for company
    batcher.flush()
    assert first.result(timeout=5) == hashlib.md5(b"x").hexdigest()
    second = batcher.submit(b"y")  # after a flush nothing waits
    assert second.result(timeout=5) == hashlib.md5(b"y").hexdigest()
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(b"z")

    other = Md5Batcher(fill=8, wait=60)
    pending = other.submit(b"w")
    other.close()  # returns once what waited is hashed
    assert pending.done() and pending.result() == hashlib.md5(b"w").hexdigest()


def test_at_most_limit_buffers_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    if not digests.LANES:
        pytest.skip("no SIMD lanes")
    gate = threading.Event()
    real = digests.md5_hex_many

    def slow(buffers):  # type: ignore[no-untyped-def]
        gate.wait(10)
        return real(buffers)

    monkeypatch.setattr(digests, "md5_hex_many", slow)
    batcher = Md5Batcher(fill=2, wait=0.01, limit=3)
    try:
        accepted = threading.Semaphore(0)

        def submit_five() -> None:
            for i in range(5):
                batcher.submit(bytes([i]))
                accepted.release()

        thread = threading.Thread(target=submit_five, daemon=True)
        thread.start()
        got = sum(accepted.acquire(timeout=0.5) for _ in range(5))
        assert got == 3  # the fourth blocks while three wait or hash
        gate.set()
        thread.join(5)
        assert not thread.is_alive()
    finally:
        gate.set()
        batcher.close()


def test_a_failing_pass_fails_its_futures_and_the_batcher_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    if not digests.LANES:
        pytest.skip("no SIMD lanes")
    real = digests.md5_hex_many
    calls = iter([MemoryError("no room")])

    def flaky(buffers):  # type: ignore[no-untyped-def]
        error = next(calls, None)
        if error is not None:
            raise error
        return real(buffers)

    monkeypatch.setattr(digests, "md5_hex_many", flaky)
    with Md5Batcher(fill=1) as batcher:
        with pytest.raises(MemoryError):
            batcher.submit(b"a").result(timeout=5)
        assert batcher.submit(b"b").result(timeout=5) == hashlib.md5(b"b").hexdigest()


def test_without_lanes_the_batcher_resolves_in_the_calling_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digests, "LANES", 0)
    with Md5Batcher() as batcher:
        future = batcher.submit(b"abc")
        assert future.done() and future.result() == hashlib.md5(b"abc").hexdigest()
        assert batcher._thread is None
