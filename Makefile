# The two set-up commands of the README: `make sweep` and `make test`.
# Both create .venv when it is missing and install the project into it.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.tilesweep-installed

.PHONY: install sweep test test-all bench bench-check gpu-deps clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tilesweep needs Python 3.11 or newer, found " + sys.version.split()[0] + ": set PYTHON=python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

sweep: install
	$(BIN)/tilesweep run

# `make test` (what CI runs) leaves out the extended tier: whole-process checks that start clusters of
# their own (the cluster recipe, the GPU-check farm, a local cluster's dashboard) or that repeat another
# test's path. `make test-all` runs every test and every quick benchmark.
# Two processes: the tests that sweep on a Ray cluster run in one, in order (the `cluster` group, see
# tests/conftest.py); the single-threaded tests run in the other meanwhile.
test: install
	$(BIN)/python -m pytest -q -m "not extended" -n 2 --dist loadgroup

test-all: install
	TILESWEEP_QUICK_BENCH=all $(BIN)/python -m pytest -q -n 2 --dist loadgroup

bench: install
	$(BIN)/python -m benchmarks

# The quick benchmarks' tests with every benchmark (`make test` runs the four that need no cluster of their own).
bench-check: install
	TILESWEEP_QUICK_BENCH=all $(BIN)/python -m pytest -q tests/benchmarks

# Wheels for benchmarks/gpu_check.sh on a GPU machine without network: transformers (this
# environment's version) and what it imports, and nvidia-ml-py, for that machine's Python
# (GPU_PYTHON_VERSION) on x86-64 Linux. Its torch and torchvision bring numpy, so numpy stays out.
GPU_PYTHON_VERSION ?= 3.12
WHEELS ?= .whl
gpu-deps: install
	rm -rf $(WHEELS) && mkdir -p $(WHEELS)
	$(BIN)/python -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
		--python-version $(GPU_PYTHON_VERSION) --implementation cp --platform manylinux_2_28_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d $(WHEELS) \
		"transformers==$$($(BIN)/python -c 'import transformers; print(transformers.__version__)')" nvidia-ml-py
	rm -f $(WHEELS)/numpy-*.whl
	@ls $(WHEELS) | wc -l | xargs -I{} echo "gpu-deps: {} wheels in $(WHEELS) for Python $(GPU_PYTHON_VERSION)"

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
