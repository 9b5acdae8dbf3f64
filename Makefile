# The two commands of the README: `make demo` and `make test`. Both call `make setup` first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FMNIST_DIR := /usr/share/datasets/fashion-mnist
# Keep BLAS/OpenMP from oversubscribing the two cores of a small machine.
export OMP_NUM_THREADS ?= 2
# OpenMP threads that wait for each other sleep instead of spinning: on a machine busy with other processes the
# spinning thread takes the core its partner needs, and a 2-thread training step ran 2-4 times slower than with
# this setting (docs/speed.md, "Threads on a busy machine").
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup data demo test test-fast test-floor lint bench clean

setup: $(STAMP) data

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

# The embedded default data set: Debian's dataset-fashion-mnist. Where it cannot be installed the
# data code falls back to torchvision's download, or says how to get the files.
data:
	@if [ -d $(FMNIST_DIR) ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) || \
	  echo "note: could not install dataset-fashion-mnist; bridgeattn will try torchvision's download"; \
	else echo "note: $(FMNIST_DIR) missing and apt-get unavailable; bridgeattn will try torchvision's download"; fi

demo: setup
	$(VENV)/bin/bridgeattn demo

test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests
	$(MAKE) test-floor

# The model tests on the lowest supported timm (pyproject.toml), overlaid on the environment: timm is pure
# Python, so a --target install of that one version, first on PYTHONPATH, is the second environment.
TIMM_FLOOR := $(shell sed -n 's/.*"timm>=\([0-9.]*\).*/\1/p' pyproject.toml)
FLOOR_DIR := .floor/timm-$(TIMM_FLOOR)
test-floor: setup
	test -d $(FLOOR_DIR) || $(PY) -m pip install -q --no-deps --target $(FLOOR_DIR) timm==$(TIMM_FLOOR)
	PYTHONPATH=$(FLOOR_DIR) $(PY) -c "import timm; assert timm.__version__ == '$(TIMM_FLOOR)', timm.__version__"
	PYTHONPATH=$(FLOOR_DIR) $(PY) -m pytest -q -p no:cacheprovider tests/models/test_registry.py tests/models/test_timm_contract.py

# The suite without fault-injection, multi-process, torch.compile and ONNX tests (markers in pyproject.toml).
test-fast: setup
	$(PY) -m pytest -q -x -p no:cacheprovider -m "not slow and not multiprocess and not compile and not onnx" tests

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

bench: setup
	$(PY) benchmarks/overhead.py --threads 2 --batch-sizes 8 --compile-batch-sizes 8 --repeats 7

clean:
	rm -rf $(VENV) .floor build *.egg-info src/*.egg-info runs
