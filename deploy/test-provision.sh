#!/usr/bin/env bash
# `make test-provision`: run deploy/provision.sh for real, as root, inside a throwaway Debian Bookworm root
# made with debootstrap, then check what it left behind. Takes several minutes (packages from Debian and
# PyPI), so it is not part of `make test`.
set -euo pipefail
[ "$(id -u)" -eq 0 ] || { echo "test-provision: run as root" >&2; exit 1; }
SRC="$(cd "$(dirname "$0")/.." && pwd)"
ROOT_DIR=${ROOT_DIR:-$(mktemp -d /tmp/appliance-chroot.XXXXXX)}
command -v debootstrap >/dev/null || "$SRC/deploy/apt-ensure.sh" debootstrap:debootstrap
cleanup() { umount -l "$ROOT_DIR/proc" "$ROOT_DIR/sys" "$ROOT_DIR/dev" 2>/dev/null || true; }
trap cleanup EXIT

[ -x "$ROOT_DIR/usr/bin/apt-get" ] || debootstrap --variant=minbase bookworm "$ROOT_DIR"
mount -t proc proc "$ROOT_DIR/proc"
mount --rbind /sys "$ROOT_DIR/sys"
mount --rbind /dev "$ROOT_DIR/dev"
cp /etc/resolv.conf "$ROOT_DIR/etc/resolv.conf"
# The chroot reaches the package indexes the way this host does (its proxy CA, its pip settings).
cp /etc/ssl/certs/ca-certificates.crt "$ROOT_DIR/etc/ssl/certs/ca-certificates.crt" 2>/dev/null || true
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$ROOT_DIR/etc/pip.conf"
rm -rf "$ROOT_DIR/src"
mkdir -p "$ROOT_DIR/src"
tar -C "$SRC" --exclude ./.venv --exclude ./.venv-models --exclude ./build --exclude ./.git -cf - . | tar -C "$ROOT_DIR/src" -xf -
chroot "$ROOT_DIR" apt-get install -y -qq systemd udev ca-certificates >/dev/null
cp /etc/ssl/certs/ca-certificates.crt "$ROOT_DIR/etc/ssl/certs/ca-certificates.crt"
chroot "$ROOT_DIR" /src/deploy/provision.sh --platform debian --device-id chroot-test --broker mqtt://127.0.0.1:1883 --no-start

check() { chroot "$ROOT_DIR" sh -c "$1" >/dev/null || { echo "test-provision: FAILED: $1" >&2; exit 1; }; }
check "id appliance | grep -q video"
check "test -x /opt/appliance/.venv/bin/appliance"
check "/opt/appliance/.venv/bin/appliance config check /etc/appliance/config.toml"
check "APPLIANCE_CONFIG=/etc/appliance/config.toml /opt/appliance/.venv/bin/appliance detect /opt/appliance/src/tests/data/astronaut.png --json | grep -q person"
check "test -L /etc/systemd/system/multi-user.target.wants/appliance.service"
check "test -f /etc/udev/rules.d/65-appliance-edgetpu.rules"
# Idempotent: a second run succeeds and changes nothing that matters.
chroot "$ROOT_DIR" /src/deploy/provision.sh --platform debian --device-id chroot-test --broker mqtt://127.0.0.1:1883 --no-start >/dev/null
echo "test-provision: OK ($ROOT_DIR)"
