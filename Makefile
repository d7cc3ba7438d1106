# Every target installs what it needs into .venv first, so each works on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint typecheck pytest models bench clean

install: $(STAMP)

# --system-site-packages: on a Pi, picamera2 and libcamera come from apt, not PyPI.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: install
	$(BIN)/ruff check device tests models/build.py
	$(BIN)/ruff format --check device tests models/build.py

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: install
	$(BIN)/appliance bench models --json

# Rebuilds models/*.tflite from the registry packages named in models/README.md, in its own venv with
# TensorFlow, which is never a runtime dependency.
models:
	$(MAKE) -C models rebuild

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build
