#!/usr/bin/env bash
# Runs once, on the first boot, from cloud-init (deploy/firstboot/user-data), which has already moved the
# device key off the boot partition and unpacked the release: runs provision.sh with the device's
# identity. Run it again by hand (as root) after a failure; docs/flash-and-boot.md says when.
#
# The environment overrides the paths (the tests run it against a folder standing in for the card):
# BOOT the appliance folder on the boot partition, SECRETS_DIR where the key waits (root only),
# FIRSTBOOT_LOG its log, PROVISION the provision.sh to run.
set -euo pipefail
BOOT=${BOOT:-/boot/firmware/appliance}
SECRETS_DIR=${SECRETS_DIR:-/var/lib/appliance-firstboot}
FIRSTBOOT_LOG=${FIRSTBOOT_LOG:-/var/log/appliance-firstboot.log}
PROVISION=${PROVISION:-$(cd "$(dirname "$0")/.." && pwd)/provision.sh}
key="$SECRETS_DIR/device.key"

# The key leaves the FAT partition (world-readable, no permissions, readable on any PC the card goes
# into) before anything that can fail. Copied to a temporary name in a root-only directory on the root
# filesystem, flushed, then renamed, so $key is either absent or whole; only then deleted from the card.
# A key on the card (a new one an operator put there) wins over one kept from an earlier attempt.
# Keep in step with the first command in user-data, which does the same before the release is unpacked.
stage_key() {
    (
        umask 077
        mkdir -p "$SECRETS_DIR"
        chmod 0700 "$SECRETS_DIR"
        if [ -f "$BOOT/device.key" ]; then
            install -m 0600 "$BOOT/device.key" "$key.new"
            sync "$key.new"
            mv -f "$key.new" "$key"
            rm -f "$BOOT/device.key"
            sync
        fi
    )
}
stage_key
exec >>"$FIRSTBOOT_LOG" 2>&1
echo "firstboot: $(date -Is)"
# On failure the key stays where it is (root only), so that running this script again can use it.
on_exit() {
    local rc=$?
    [ "$rc" = 0 ] || echo "firstboot: FAILED (exit $rc); the device key is kept in $key; fix the cause above and run $0 again as root"
}
trap on_exit EXIT
[ -f "$key" ] || { echo "firstboot: no device key: put it on the boot partition as $BOOT/device.key"; exit 66; }
# shellcheck source=/dev/null
. "$BOOT/appliance.env"
tpu=()
[ "${TPU:-0}" = 1 ] && tpu=(--tpu)
ota=()
[ -n "${OTA_URL:-}" ] && ota=(--ota-url "$OTA_URL" --ota-root "$BOOT/ota-root.json" --ota-channel "${OTA_CHANNEL:-stable}")
"$PROVISION" --device-id "$DEVICE_ID" --broker "$BROKER" \
    --ca "$BOOT/ca.crt" --cert "$BOOT/device.crt" --key "$key" "${tpu[@]}" "${ota[@]}"
# provision.sh has installed the key for the appliance user (/etc/appliance/certs); one copy is enough.
rm -f "$key"
echo "firstboot: done"
