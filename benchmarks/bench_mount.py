"""What a blob mount costs a job that reads almost nothing of it.

``mount_small_read_seconds``
    the wall time of a local Batch AI job (``azureBlobFileSystems`` mount of a container holding 200 x 1 MB blobs and
    one 3-byte blob) whose command line reads the 3 bytes, median of rounds. Today the local engine mirrors the whole
    container before the job starts (and checks it for changes after), so this grows with the container, not with
    what the job reads. ``mount_empty_job_seconds`` is the same job with an empty container beside it: the job's own
    fixed cost, so the difference is what the mirror costs. ``mount_mirrored_mb`` is what the mount copied.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

BLOBS = 200
BLOB_SIZE = 1 << 20
ROUNDS = int(os.environ.get("BENCH_MOUNT_ROUNDS", "3"))


def _job(folder: Path, container: str) -> Path:
    spec = {
        "properties": {
            "nodeCount": 1,
            "customToolkitSettings": {"commandLine": "head -c 3 $AZ_BATCHAI_JOB_MOUNT_ROOT/m/small.txt"},
            "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_TEMP",
            "mountVolumes": {
                "azureBlobFileSystems": [
                    {"accountName": "devstoreaccount1", "containerName": container, "relativeMountPath": "m"}
                ]
            },
        }
    }
    path = folder / f"{container}.job.json"
    path.write_text(json.dumps(spec))
    return path


def run() -> dict[str, float]:
    """Measure; see the module docstring."""
    import azbai
    from azbai.local.azurite import DEV_ACCOUNT, Emulator
    from azbai.local.service import create_job
    from azbai.local.stores import open_store
    from azbai.local.transfer import upload
    from azbai.local.workspace import Workspace

    tmp = Path(tempfile.mkdtemp(prefix="azbai-bench-mount-"))
    workspace = Workspace(tmp / "ws")
    emulator = Emulator(workspace)
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
        walls: dict[str, list[float]] = {"big": [], "empty": []}
        for index in range(ROUNDS):
            for container in ("big", "empty"):
                plan = azbai.load(_job(tmp, container))
                began = time.perf_counter()
                record = create_job(workspace, plan, name=f"mount-{container}-{index}", wait=True)
                walls[container].append(time.perf_counter() - began)
                if record.state != "succeeded":
                    raise RuntimeError(f"the mount job failed: {record.state}")
        total = sum(e.size for e in big.list())
        return {
            "mount_small_read_seconds": statistics.median(walls["big"]),
            "mount_empty_job_seconds": statistics.median(walls["empty"]),
            "mount_mirrored_mb": total / 1e6,
        }
    finally:
        emulator.stop()
        shutil.rmtree(tmp, ignore_errors=True)
