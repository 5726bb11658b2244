"""A small job script: reports what Batch AI would have given it, writes outputs, and fails or sleeps on request."""

import json
import os
import sys
import time

names = sorted(
    k
    for k in os.environ
    if k.startswith(("AZ_BATCHAI_", "TF_CONFIG", "MODE", "DB_PASSWORD", "OMPI_", "RANK"))
)
report = {"argv": sys.argv[1:], "env": {k: os.environ[k] for k in names if k != "DB_PASSWORD"}}
report["secret_length"] = len(os.environ.get("DB_PASSWORD", ""))
# what the input directories held while the job ran (a lazy mount's local path holds only what was read afterwards)
inputs = {k: v for k, v in os.environ.items() if k.startswith("AZ_BATCHAI_INPUT_")}
report["inputs"] = {k: sorted(os.listdir(v)) if os.path.isdir(v) else None for k, v in inputs.items()}
print(json.dumps(report, sort_keys=True), flush=True)
print("a line on stderr", file=sys.stderr, flush=True)
rank = os.environ.get("AZ_BATCHAI_TASK_INDEX") or os.environ.get("OMPI_COMM_WORLD_RANK") or "0"
for key, value in os.environ.items():
    if key.startswith("AZ_BATCHAI_OUTPUT_"):
        os.makedirs(value, exist_ok=True)
        with open(os.path.join(value, f"result-{rank}.txt"), "w") as out:
            out.write(f"written by rank {rank}\n")
if os.environ.get("MODE") == "fail":
    print("failing on purpose", file=sys.stderr, flush=True)
    sys.exit(3)
if os.environ.get("MODE") == "sleep":
    time.sleep(60)
