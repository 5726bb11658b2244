"""The fault suite's job: writes N numbered files to each output, logging each one (with its MD5) to a ledger
outside the workspace once it is complete on disk, so a test knows every byte that was written before a fault.

    python writer.py COUNT PAUSE_AT CRASH_AT      (-1: never)

At PAUSE_AT it touches ``paused`` and waits for ``go`` (the test injects its fault meanwhile); at CRASH_AT it
exits 3. A write that fails (a full disk) ends the job with exit code 4.
"""

import hashlib
import os
import sys
import time
from pathlib import Path

KEYS = ("SHARE", "BLOB", "TMP")


def main() -> int:
    count, pause_at, crash_at = (int(a) for a in sys.argv[1:4])
    ledger = Path(os.environ["LEDGER"])
    outputs = {key: Path(os.environ[f"AZ_BATCHAI_OUTPUT_{key}"]) for key in KEYS}
    (ledger / "pid").write_text(str(os.getpid()))
    with open(ledger / "env.txt", "w") as env:
        env.write("\n".join(sorted(os.environ)))
    for i in range(count):
        if i == pause_at:
            (ledger / "paused").touch()
            while not (ledger / "go").exists():
                time.sleep(0.05)
        if i == crash_at:
            print(f"crashing at file {i}", flush=True)
            return 3
        for key, directory in outputs.items():
            name = ".azbai-first.bin" if i == 0 else f"part-{i:04d}.bin"
            data = hashlib.sha256(f"{key}{i}".encode()).digest() * (64 + i)
            try:
                with open(directory / name, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as exc:
                print(f"cannot write {name}: {exc}", file=sys.stderr, flush=True)
                return 4
            with open(ledger / "ledger.txt", "a") as entry:
                entry.write(f"{key} {name} {hashlib.md5(data).hexdigest()}\n")
    (ledger / "done").touch()
    print(f"wrote {count} file(s) to each output", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
