# azbai: `make demo` and `make test` set everything up on a fresh machine (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.azbai-setup
AZURITE := node_modules/.bin/azurite-blob
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo demo-style demo-v2 test bench lint lock clean

## setup: the .venv with the pinned packages (torch 2.13.0 CPU first), and Azurite from the npm registry. Idempotent.
setup: $(STAMP) $(AZURITE)

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first: the CPU wheel 2.13.0 lies on disk; a loose requirement would pull a multi-GB CUDA build.
# constraints.txt pins every package (the resolver otherwise backtracks for many minutes over the azureml caps).
$(STAMP): $(PY) setup.cfg pyproject.toml constraints.txt
	$(PIP) install --quiet --quiet torch==2.13.0
	$(PIP) install --quiet --quiet -c constraints.txt -e '.[azureml,azureml-v2,local,recipes,dev]'
	$(PY) -c "import azureml.train.estimator" 2>/dev/null  # unpacks azureml's metadata once, not in every test
	touch $@

$(AZURITE): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

## demo: the Batch AI CNTK MNIST quickstart (ported to PyTorch), run locally with its unchanged job.json
demo: setup
	mkdir -p out
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash recipes/cntk-mnist/demo.sh

## demo-style: the style-transfer video pipeline, fired by a new video in (local) blob storage
demo-style: setup
	$(PY) recipes/style-transfer/demo.py

## demo-v2: both recipes from their migrated Azure ML CLI v2 files (v2/job.yml, v2/pipeline.yml), run by `azbai ml`
demo-v2: setup
	mkdir -p out
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash recipes/demo_v2.sh

## test: the whole test suite
test: setup
	$(PY) -m pytest

## bench: speed figures as `name: value` lines
bench: setup
	$(PY) -m benchmarks

lint: setup
	$(VENV)/bin/ruff check azbai tests benchmarks
	$(VENV)/bin/ruff format --check azbai tests benchmarks
	$(VENV)/bin/mypy

## lock: re-pin constraints.txt after changing setup.cfg (uv resolves in seconds where pip backtracks)
lock: setup
	$(PIP) install --quiet uv
	$(VENV)/bin/uv pip compile --python-version 3.11 --no-annotate --no-header \
	  --extra azureml --extra azureml-v2 --extra local --extra recipes --extra dev setup.cfg -o constraints.txt
	sed -i 's/+cpu$$//' constraints.txt

clean:
	rm -rf $(VENV) node_modules .azbai out
