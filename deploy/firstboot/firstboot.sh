#!/usr/bin/env bash
# Runs once, on the first boot, from cloud-init (deploy/firstboot/user-data), which has unpacked the
# release from the boot partition: runs provision.sh with the device's identity. Its log: /var/log/appliance-firstboot.log
set -euo pipefail
BOOT=${BOOT:-/boot/firmware/appliance}
exec >>/var/log/appliance-firstboot.log 2>&1
echo "firstboot: $(date -Is)"
# shellcheck source=/dev/null
. "$BOOT/appliance.env"
tpu=()
[ "${TPU:-0}" = 1 ] && tpu=(--tpu)
ota=()
[ -n "${OTA_URL:-}" ] && ota=(--ota-url "$OTA_URL" --ota-root "$BOOT/ota-root.json" --ota-channel "${OTA_CHANNEL:-stable}")
/opt/appliance/release/deploy/provision.sh --device-id "$DEVICE_ID" --broker "$BROKER" \
    --ca "$BOOT/ca.crt" --cert "$BOOT/device.crt" --key "$BOOT/device.key" "${tpu[@]}" "${ota[@]}"
# The private key has been installed for the appliance user only; do not leave a copy on the FAT partition.
shred -u "$BOOT/device.key"
echo "firstboot: done"
