# Two entry points for a fresh machine, each doing its own set-up:
#   make bench   the main job: speed tables on a GPU, the correctness matrix on a CPU-only machine
#   make test    the test suite (what CI runs through .ci/run)
# On a machine whose python already has a CUDA torch (the GPU box) the venv reuses that torch.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# Pins that match the GPU machine and work with Triton's CPU interpreter (numpy>=2.4 breaks it).
CPU_TORCH := torch==2.13.0
DEPS      := triton==3.6.0 "numpy<2.4" pytest pytest-benchmark expecttest ninja tqdm matplotlib scikit-learn

.PHONY: test bench build native venv clean

$(VENV)/.ready:
	@if $(PYTHON) -c "import torch, sys; sys.exit(0 if torch.version.cuda else 1)" 2>/dev/null; then \
	    echo "using the CUDA torch of $(PYTHON)"; \
	    $(PYTHON) -m venv --system-site-packages $(VENV) && \
	    $(PY) -m pip install -q $$($(PY) -c "import triton" 2>/dev/null || echo triton==3.6.0) \
	        pytest pytest-benchmark expecttest ninja tqdm matplotlib; \
	else \
	    $(PYTHON) -m venv $(VENV) && $(PY) -m pip install -q $(CPU_TORCH) $(DEPS); \
	fi
	touch $@

venv: $(VENV)/.ready

# setup.py builds the native libraries (dlkernels/lib/libdlk_*.so, via csrc/build.py; no torch inside).
build: venv
	$(PY) -m pip install -q -e . --no-build-isolation
	@test -f dlkernels/lib/libdlk_cpu.so || { echo "build: dlkernels/lib/libdlk_cpu.so was not built"; exit 1; }

# Only the native libraries (no pip, no torch): python csrc/build.py --help for the options.
native: venv
	$(PY) csrc/build.py

test: build
	$(PY) -m pytest tests -q -rs

bench: build
	$(PY) -m dlkernels.bench

# Mutation testing (issue #17): plants each bug of tests/mutation/catalogue.py in a copy of the tree and runs
# its family's tests; tens of minutes, so not part of `make test`. MUTATION_ARGS="--jobs 2 --family rnn" etc.
.PHONY: mutation
mutation: build
	nice -n 10 $(PY) -m tests.mutation.run --json build/mutation/results.json $(MUTATION_ARGS)

clean:
	rm -rf build *.egg-info dlkernels/lib $(VENV)
