#!/usr/bin/env bash
# `make demo`: the Batch AI CNTK quickstart, step by step, on the embedded default (Azurite + local processes).
#
# The quickstart (github.com/Azure/BatchAI, recipes/CNTK/CNTK-GPU-Python) did:
#   az storage file upload --share-name scripts --path cntk --source ConvNet_MNIST.py
#   az storage blob upload-batch --destination data --destination-path mnist_cntk --source mnist_cntk
#   az batchai job create -n cntk_python_1 -f job.json --storage-account-name $STORAGE
#   az batchai job file stream -j cntk_python_1 -f stderr.txt
#   az batchai job file list -j cntk_python_1 -d MODEL
# The same commands, with azbai instead of az, and the job.json unchanged.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
azbai="${AZBAI:-azbai}"
job="${JOB_NAME:-cntk-mnist-$(date +%Y%m%d-%H%M%S)}"
data="${DATA_DIR:-out/mnist_cntk}"
run() { printf '\n$ %s\n' "$*" >&2; "$@"; }

run python "$here/prepare_data.py" "$data" ${MNIST_ZIP:+--zip "$MNIST_ZIP"}
run "$azbai" storage upload --account devstoreaccount1 --share scripts --destination-path cntk --source "$here/ConvNet_MNIST.py"
run "$azbai" storage upload --account devstoreaccount1 --container data --destination-path mnist_cntk --source "$data" --incremental
run "$azbai" job create -f "$here/job.json" -n "$job" -e cntk-quickstart
run "$azbai" job file stream -n "$job" -f stderr.txt | tee "out/$job.stderr.txt"
run "$azbai" job wait -n "$job"
run "$azbai" job file list -n "$job" -d MODEL
final="$(grep '^Final Results' "out/$job.stderr.txt" | tail -1)"
printf '\n%s\n' "$final"
