"""A test job process: record what the launcher gave it, as JSON, then optionally sleep and exit with a code.

Usage: report_env.py OUT.json [SLEEP_SECONDS [EXIT_CODE]]

Only launcher variables, rank variables and the names in $REPORT_VARS are recorded; the secret named by
$REPORT_SECRET is recorded as its SHA-256, never its value.
"""

import hashlib
import json
import os
import sys
import time

PREFIXES = ("AZ_BATCHAI_", "OMPI_COMM_WORLD_", "PMI_")
NAMES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TF_CONFIG")

out = sys.argv[1]
sleep = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
code = int(sys.argv[3]) if len(sys.argv) > 3 else 0
wanted = [n for n in os.environ.get("REPORT_VARS", "").split(",") if n]
report = {n: v for n, v in os.environ.items() if n.startswith(PREFIXES) or n in NAMES or n in wanted}
report["cwd"] = os.getcwd()
report["pid"] = os.getpid()
secret = os.environ.get("REPORT_SECRET")
if secret:
    report["secret_sha256"] = hashlib.sha256(os.environ.get(secret, "").encode()).hexdigest()
with open(out + ".tmp", "w") as handle:
    json.dump(report, handle)
os.replace(out + ".tmp", out)
# one write per line: ranks share stdout.txt, and print() may issue the text and the newline as two writes
sys.stdout.write(f"reported {os.path.basename(out)}\n")
sys.stdout.flush()
sys.stderr.write(f"stderr of {os.path.basename(out)}\n")
sys.stderr.flush()
time.sleep(sleep)
sys.exit(code)
