# banger — the two commands a newcomer needs are `make run` and `make test`.
# Both install what is missing (system packages via apt when root, Python
# dependencies into .venv) and are quick when everything is already there.

SHELL := /bin/bash
# Debian's interpreter, not a per-user one (pyenv under /root is unreadable to
# the unprivileged owner user the tests run bangerd as).
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit build deps sysdeps testdeps lockcheck lock smoke bench fuzz clean

deps: sysdeps lockcheck $(STAMP)

sysdeps:
	@scripts/ensure-system-deps scripts/system-packages.txt

testdeps: sysdeps
	@scripts/ensure-system-deps scripts/test-packages.txt

# Python dependencies: exactly requirements.lock, hash-checked (scripts/install-python-deps).
# A lock made from other inputs than pyproject.toml's ranges stops here with one line.
lockcheck:
	@$(PYTHON) scripts/lockfile.py check

$(STAMP): pyproject.toml requirements.lock scripts/lock-tools.in
	@scripts/install-python-deps $(PYTHON) $(VENV)
	@touch $@

# Refresh the lock after changing a range in pyproject.toml (or to take upstream
# releases: make lock UPGRADE=--upgrade), then run the full suite before committing it.
UPGRADE ?=
lock:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install -q uv
	@scripts/lock $(BIN)/uv $(UPGRADE)

run: deps
	@scripts/run-demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: lockcheck $(STAMP)
	$(BIN)/pytest -m "not root and not guest"

test: testdeps lockcheck $(STAMP) lint typecheck
	$(BIN)/pytest

# smoke (root): the whole first-use path from an empty BANGER_HOME — image build
# and kernel pull in the host namespace, the VM in a throwaway network namespace.
# On a KVM host with Firecracker installed: make smoke VMM=firecracker
VMM ?= qemu
smoke: testdeps $(STAMP)
ifeq ($(VMM),firecracker)
	BANGER_SMOKE_VMM=firecracker $(BIN)/pytest -q tests/smoke tests/e2e/test_pause_e2e.py
else
	scripts/smoke
endif

# Benchmarks: ratios within one run, never timed assertions (see bench/results/latest.md).
bench: testdeps $(STAMP)
	$(BIN)/python -m bench.run

# Longer hostile-input runs: the same property/schemathesis suites, fresh random inputs.
fuzz: testdeps $(STAMP)
	BANGER_FUZZ_EXAMPLES=500 $(BIN)/pytest tests/reliability tests/unit/test_helper_validate.py tests/unit/test_config_file_sync_props.py -p no:cacheprovider

build: $(STAMP)
	$(BIN)/uv build --wheel --no-build-isolation --python $(BIN)/python -o dist

clean:
	rm -rf dist build .mypy_cache .ruff_cache .pytest_cache
