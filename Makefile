# sudo make demo   the leak reproduction under spawnwatch (needs root; installs only what it needs)
# sudo make test   the whole test suite on the real kernel (needs root; installs the test corpus)
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help setup setup-demo setup-test test unit demo bench check-root clean

help:
	@echo "sudo make demo    reproduce the MCP child leak and watch spawnwatch catch it"
	@echo "sudo make test    run every test on the real kernel"
	@echo "sudo make setup-demo   install what the demo needs: bcc, kernel headers, node, npm (idempotent)"
	@echo "sudo make setup-test   install that and the test corpus: container engines, Prometheus, ... (README)"
	@echo "scripts/setup-host.sh demo|test --dry-run   what either would install, changing nothing"
	@echo "make unit         the tests that need no root (PYTHON=python3.10 for another interpreter)"
	@echo "sudo make bench   fork-storm benchmark: consumer overhead, CPU, memory, replay cost, lost events; time to alert"
	@echo "sudo make vagrant-demo / vagrant-test / vagrant-destroy   the leak in a throwaway VM"

check-root:
	@if [ "$$(id -u)" -ne 0 ]; then \
	    echo "error: this target traces the kernel and must run as root: sudo make $(MAKECMDGOALS)" >&2; exit 1; fi

setup-demo: check-root
	@scripts/setup-host.sh demo

setup-test: check-root
	@scripts/setup-host.sh test

# What every engineer and CI ran before the split: the whole set-up.
setup: setup-test

# Two workers: the tests that trace the host (root, docker, npm) on one, in order, as
# each expects the host to itself; modules of pure tests beside them (tests/conftest.py).
test: setup-test
	$(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

# `make unit PYTHON=/path/to/python3.10`: the same tests under another interpreter,
# in a venv of its own (no bcc there: these tests need none).
PYTHON ?=
UNIT_VENV = $(if $(PYTHON),.venv-$(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])'),$(VENV))

unit:
	@if [ -n "$(PYTHON)" ]; then scripts/unit-venv.sh "$(PYTHON)" "$(UNIT_VENV)"; fi
	$(UNIT_VENV)/bin/python -m pytest -m "not root and not docker and not npm" $(PYTEST_ARGS)

demo: setup-demo
	PY=$(PY) scripts/demo.sh

bench: setup-test
	$(PY) bench/forkstorm.py
	$(PY) bench/capture_cost.py
	$(PY) bench/redact.py
	$(PY) bench/time_to_alert.py

include vagrant/vagrant.mk

clean:
	rm -rf $(VENV) .venv-3.* build dist src/*.egg-info .pytest_cache
