"""What a blob mount costs a job: one that reads almost nothing of the container, and one that reads all of it.

``mount_small_read_seconds``
    the wall time of a local Batch AI job (``azureBlobFileSystems`` mount of a container holding 200 x 1 MB blobs and
    one 3-byte blob) whose command line reads the 3 bytes, with the default mount (a lazy FUSE mount where the
    machine allows it), median of rounds. ``mount_small_read_mirror_seconds`` is the same job with
    ``AZBAI_BLOB_MOUNT=mirror`` (the whole container downloaded before the job). ``mount_empty_job_seconds`` is the
    job with a container holding only the 3-byte blob: the job's own fixed cost. ``mount_fetched_mb`` is what the
    default mount downloaded for the small read, ``mount_mirrored_mb`` what the mirror copies.
``mount_read_mb_per_s``
    a job reading the 200 MB sequentially through the default mount (every file opened, so fetched, then read),
    timed inside the job, median of rounds; ``mount_download_mb_per_s`` is a plain verified download of the same
    files (``transfer.download``, 16 in parallel) in the same rounds: what reading everything costs over fetching it.

The contestants run in turns, the order rotating each round, so load from other work falls on all of them alike.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

BLOBS = 200
BLOB_SIZE = 1 << 20
ROUNDS = int(os.environ.get("BENCH_MOUNT_ROUNDS", "3"))
MODE_ENV = "AZBAI_BLOB_MOUNT"

#: a job's program that reads every file of the mount's data/ in 1 MiB reads and says how fast
READ_ALL = """
import json, os, sys, time
root = os.path.join(os.environ["AZ_BATCHAI_JOB_MOUNT_ROOT"], "m", "data")
began, size = time.perf_counter(), 0
for name in sorted(os.listdir(root)):
    with open(os.path.join(root, name), "rb", buffering=0) as f:
        while chunk := f.read(1 << 20):
            size += len(chunk)
print(json.dumps({"bytes": size, "seconds": time.perf_counter() - began}))
"""


def _job(folder: Path, container: str, command: str) -> Path:
    spec = {
        "properties": {
            "nodeCount": 1,
            "customToolkitSettings": {"commandLine": command},
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP",
            "mountVolumes": {
                "azureBlobFileSystems": [
                    {"accountName": "devstoreaccount1", "containerName": container, "relativeMountPath": "m"}
                ]
            },
        }
    }
    path = folder / f"{container}-{abs(hash(command))}.job.json"
    path.write_text(json.dumps(spec))
    return path


def _cache_bytes(record: Any) -> int:
    cache = record.work_dir / "azbai" / "mount-cache" / "m"
    return sum(p.stat().st_size for p in cache.rglob("*") if p.is_file()) if cache.is_dir() else 0


def run() -> dict[str, float]:
    """Measure; see the module docstring."""
    import azbai
    from azbai.local.azurite import DEV_ACCOUNT, Emulator
    from azbai.local.blobfuse import fuse_unavailable
    from azbai.local.service import create_job, stream_file
    from azbai.local.stores import open_store
    from azbai.local.transfer import download, upload
    from azbai.local.workspace import Workspace

    tmp = Path(tempfile.mkdtemp(prefix="azbai-bench-mount-"))
    workspace = Workspace(tmp / "ws")
    emulator = Emulator(workspace)
    saved = os.environ.get(MODE_ENV)
    try:
        emulator.ensure()
        big = open_store(workspace, DEV_ACCOUNT, container="big")
        source = tmp / "src"
        source.mkdir()
        for i in range(BLOBS):
            (source / f"f{i:04d}.bin").write_bytes(os.urandom(BLOB_SIZE))
        upload(source, big, "data")
        big.write_bytes("small.txt", b"abc")
        empty = open_store(workspace, DEV_ACCOUNT, container="empty")
        empty.write_bytes("small.txt", b"abc")
        (tmp / "read_all.py").write_text(READ_ALL)
        small = "head -c 3 $AZ_BATCHAI_JOB_MOUNT_ROOT/m/small.txt"
        contestants = {
            "default": ("auto", "big", small),
            "mirror": ("mirror", "big", small),
            "empty": ("auto", "empty", small),
            "read_all": ("auto", "big", f"python {tmp / 'read_all.py'}"),
            "download": None,
        }
        walls: dict[str, list[float]] = {name: [] for name in contestants}
        fetched: list[int] = []
        names = list(contestants)
        for index in range(ROUNDS):
            for name in names[index % len(names) :] + names[: index % len(names)]:
                contestant = contestants[name]
                if contestant is None:
                    target = tmp / f"download-{index}"
                    report = download(big, "data", target)
                    walls[name].append(report.bytes_transferred / report.seconds / 1e6)
                    shutil.rmtree(target)
                    continue
                mode, container, command = contestant
                os.environ[MODE_ENV] = mode
                plan = azbai.load(_job(tmp, container, command))
                began = time.perf_counter()
                record = create_job(workspace, plan, name=f"mount-{name}-{index}", wait=True)
                wall = time.perf_counter() - began
                if record.state != "succeeded":
                    raise RuntimeError(f"the {name} job failed: {record.state}")
                if name == "read_all":
                    out = json.loads(b"".join(stream_file(record, "stdout.txt", follow=False)))
                    if out["bytes"] != BLOBS * BLOB_SIZE:
                        raise RuntimeError(f"the read_all job read {out['bytes']} bytes")
                    walls[name].append(out["bytes"] / out["seconds"] / 1e6)
                else:
                    walls[name].append(wall)
                if name == "default":
                    fetched.append(_cache_bytes(record))
        total = sum(e.size for e in big.list())
        results = {
            "mount_small_read_seconds": statistics.median(walls["default"]),
            "mount_small_read_mirror_seconds": statistics.median(walls["mirror"]),
            "mount_empty_job_seconds": statistics.median(walls["empty"]),
            "mount_fetched_mb": statistics.median(fetched) / 1e6,
            "mount_mirrored_mb": total / 1e6,
            "mount_read_mb_per_s": statistics.median(walls["read_all"]),
            "mount_download_mb_per_s": statistics.median(walls["download"]),
        }
        if fuse_unavailable() is not None:
            results["mount_default_is_fuse"] = (
                0.0  # the default fell back to the mirror: both rows are mirrors
            )
        return results
    finally:
        if saved is None:
            os.environ.pop(MODE_ENV, None)
        else:
            os.environ[MODE_ENV] = saved
        emulator.stop()
        shutil.rmtree(tmp, ignore_errors=True)
