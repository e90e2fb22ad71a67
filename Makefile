# Two commands on a fresh machine: `make demo` and `make test` (each sets up .venv first when needed).
SHELL := /bin/bash
export R1_DISTILL_CACHE ?= $(CURDIR)/.cache
export HF_HUB_OFFLINE ?= 1
VENV := .venv

.PHONY: setup setup-gpu demo test test-fast clean-runs

setup:
	bash scripts/setup.sh

# GPU machines (Linux x86_64, CUDA 13 driver, Python 3.11/3.12): requirements/gpu.lock + gpu-build.txt into $(VENV)
setup-gpu:
	VENV=$(VENV) bash scripts/setup-gpu.sh

demo: setup
	$(VENV)/bin/distill run --config recipes/demo.yaml

# fast tier, then the slow end-to-end tier (real vLLM engine, whole flows, a local Ray instance) next to a
# real Prefect server on 127.0.0.1 that tests/test_prefect_server.py deploys to (stopped by PID afterwards)
test: setup
	$(VENV)/bin/python -m pytest -q -m "not slow"
	bash scripts/with-prefect-server.sh $(VENV)/bin/python -m pytest -q -m slow

test-fast: setup
	$(VENV)/bin/python -m pytest -q -m "not slow"

clean-runs:
	rm -rf runs
