# sudo make demo   the leak reproduction under spawnwatch (needs root)
# sudo make test   the whole test suite on the real kernel (needs root)
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help setup test unit demo bench check-root clean

help:
	@echo "sudo make demo    reproduce the MCP child leak and watch spawnwatch catch it"
	@echo "sudo make test    run every test on the real kernel"
	@echo "sudo make setup   install what both need (idempotent)"
	@echo "make unit         the tests that need no root"
	@echo "sudo make bench   fork-storm benchmark: lost events and ns/event per BPF program"

check-root:
	@if [ "$$(id -u)" -ne 0 ]; then \
	    echo "error: this target traces the kernel and must run as root: sudo make $(MAKECMDGOALS)" >&2; exit 1; fi

setup: check-root
	@scripts/setup-host.sh

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

unit:
	$(PY) -m pytest -m "not root and not docker and not npm" $(PYTEST_ARGS)

demo: setup
	@echo "== spawnwatch trace: 6 seconds of process events while a shell spawns a few children"
	@(sleep 3; for i in 1 2 3; do sh -c "sleep 0.$$i; exec true demo-child-$$i" & done; wait) &
	$(PY) -m spawnwatch trace --duration 6

bench: setup
	$(PY) bench/forkstorm.py --duration 30

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
