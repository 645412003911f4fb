# grove — `make demo` runs the main job on a fresh machine, `make test` passes the tests.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install system-deps lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the tests and the demo use: etcdctl/etcd (compatibility tests, benchmarks),
# Docker Engine and busybox-static (pods run in real containers; images are built offline).
system-deps:
	@bash scripts/system-deps.sh

demo: install system-deps
	$(BIN)/grove images build
	$(BIN)/python -m grove.demo

test: install system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check grove kvstore orchestrator node bench tests

clean:
	rm -rf $(VENV) .grove build *.egg-info
