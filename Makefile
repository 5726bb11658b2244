# azbai: `make demo` and `make test` set everything up on a fresh machine (see README.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.azbai-setup
AZURITE := node_modules/.bin/azurite-blob
#: the C extension (MD5s of many buffers at once), built in place by the editable install; optional: without a C
#: compiler pip installs azbai without it, and azbai hashes with hashlib alone
MD5X := azbai/local/md5x$(shell $(PYTHON) -c "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))")
#: the real Batch AI CLI (azure-cli-batchai 0.4.10) for the differential test, in a venv of its own
AZCLI := .venv-azcli
AZCLI_PINS := tests/az/azcli-constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo demo-style demo-v2 test differential bench faults fuzz lint lock clean

## setup: the .venv with the pinned packages (torch 2.13.0 CPU first), and Azurite from the npm registry. Idempotent.
setup: $(STAMP) $(MD5X) $(AZURITE) $(VENV)/share/azbai/az-alias.sh
	@# the venv's editable azbai must be this checkout's (a venv shared with another checkout may point there)
	@$(PY) -I -c "import azbai, pathlib, sys; sys.exit(pathlib.Path(azbai.__file__).resolve().parents[1] != pathlib.Path('$(CURDIR)').resolve())" \
		|| $(PIP) install --quiet --quiet --no-deps --no-build-isolation -e .
	@# byte-compiled now, as pip does for a regular install: an editable one leaves it to the first import, which
	@# writes nothing where PYTHONDONTWRITEBYTECODE is set, and every process then compiles azbai again (only
	@# stale files are rewritten)
	@$(PY) -m compileall -q azbai recipes benchmarks

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first: the CPU wheel 2.13.0 lies on disk; a loose requirement would pull a multi-GB CUDA build.
# constraints.txt pins every package (the resolver otherwise backtracks for many minutes over the azureml caps).
$(STAMP): $(PY) setup.cfg setup.py pyproject.toml constraints.txt
	$(PIP) install --quiet --quiet torch==2.13.0
	$(PIP) install --quiet --quiet -c constraints.txt -e '.[azureml,azureml-v2,local,recipes,dev]'
	$(PY) -c "import azureml.train.estimator" 2>/dev/null  # unpacks azureml's metadata once, not in every test
	touch $@

# rebuilt when its source changes (the full install above builds it too)
$(MD5X): azbai/local/md5x.c setup.py | $(STAMP)
	$(PIP) install --quiet --quiet --no-deps --no-build-isolation -e .

$(VENV)/share/azbai/az-alias.sh: $(STAMP)
	mkdir -p $(dir $@)
	$(VENV)/bin/azbai az --alias > $@

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

## test: the whole test suite (with the real Batch AI CLI beside it, for the differential test)
test: setup $(AZCLI)/.azbai-setup
	$(PY) -m pytest

## differential: the real Batch AI CLI (azure-cli-batchai 0.4.10, in .venv-azcli) against azbai's reading rules
$(AZCLI)/.azbai-setup: $(AZCLI_PINS)
	$(PYTHON) -m venv $(AZCLI)
	$(AZCLI)/bin/pip install --quiet --no-deps -r $(AZCLI_PINS)
	touch $@

differential: setup $(AZCLI)/.azbai-setup
	$(PY) -m pytest -q -s tests/az/test_batchai_cli_differential.py

## bench: speed figures as `name: value` lines
bench: setup
	$(PY) -m benchmarks

## faults: the fault-injection suite (tests/faults, also part of `make test`) as `faults_survived: N/M`, `files_lost: K`
faults: setup
	$(PY) -m benchmarks faults

## fuzz: >= 10,000 generated configs through validate, migrate and job create (not in CI): `fuzz_unexpected_exceptions`
fuzz: setup
	$(PY) -m benchmarks.fuzz

lint: setup
	$(VENV)/bin/ruff check azbai tests benchmarks recipes
	$(VENV)/bin/ruff format --check azbai tests benchmarks recipes
	$(VENV)/bin/mypy

## lock: re-pin constraints.txt after changing setup.cfg (uv resolves in seconds where pip backtracks)
lock: setup
	$(PIP) install --quiet uv
	$(VENV)/bin/uv pip compile --python-version 3.11 --no-annotate --no-header \
	  --extra azureml --extra azureml-v2 --extra local --extra recipes --extra dev setup.cfg -o constraints.txt
	sed -i 's/+cpu$$//' constraints.txt

clean:
	rm -rf $(VENV) $(AZCLI) node_modules .azbai out build azbai/local/md5x*.so
