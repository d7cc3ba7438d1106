#!/usr/bin/env bash
# Provision a device: Raspberry Pi OS Bookworm (arm64) or plain Debian. Idempotent: run it again to
# repair or update. docs/flash-and-boot.md walks through it.
#
#   sudo deploy/provision.sh --device-id shop-7-cam-1 --broker mqtts://broker.site.lan:8883 \
#        --ca ca.crt --cert shop-7-cam-1.crt --key shop-7-cam-1.key [--tpu] [--dry-run] \
#        [--ota-url https://models.site.lan/appliance --ota-root root.json [--ota-channel stable]]
#
# --ota-url and --ota-root turn on signed model updates (docs/ota.md); root.json is the repository's.
# --dry-run prints every action instead of doing it. --platform pi|debian overrides the detection.
# --no-start enables the service for the next boot without starting it (chroots, image builds).
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX=/opt/appliance
ETC=/etc/appliance
USER_NAME=appliance
# Coral's own apt repository: libedgetpu comes from neither Debian nor PyPI.
CORAL_REPO="deb [signed-by=/usr/share/keyrings/coral-edgetpu.gpg] https://packages.cloud.google.com/apt coral-edgetpu-stable main"
CORAL_KEY_URL="https://packages.cloud.google.com/apt/doc/apt-key.gpg"

dry_run=0 tpu=0 start=1 platform="" device_id="" broker="" ca="" cert="" key=""
ota_url="" ota_root="" ota_channel=stable

die() { echo "provision: $*" >&2; exit 64; }

while [ $# -gt 0 ]; do
    case "$1" in
    --dry-run) dry_run=1 ;;
    --tpu) tpu=1 ;;
    --no-start) start=0 ;;
    --platform) platform=$2; shift ;;
    --device-id) device_id=$2; shift ;;
    --broker) broker=$2; shift ;;
    --ca) ca=$2; shift ;;
    --cert) cert=$2; shift ;;
    --key) key=$2; shift ;;
    --ota-url) ota_url=$2; shift ;;
    --ota-root) ota_root=$2; shift ;;
    --ota-channel) ota_channel=$2; shift ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done

[[ $device_id =~ ^[A-Za-z0-9_-]{1,64}$ ]] || die "--device-id must be 1-64 letters, digits, - or _"
[[ $broker =~ ^mqtts?://([^:/]+)(:([0-9]+))?$ ]] || die "--broker must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"
broker_host=${BASH_REMATCH[1]}
tls=false
[[ $broker == mqtts://* ]] && tls=true
broker_port=${BASH_REMATCH[3]:-$([ "$tls" = true ] && echo 8883 || echo 1883)}
if [ "$tls" = true ]; then
    for f in "$ca" "$cert" "$key"; do
        [ -n "$f" ] || die "mqtts needs --ca, --cert and --key"
        [ "$dry_run" = 1 ] || [ -r "$f" ] || die "cannot read $f"
    done
fi
if [ -n "$ota_url$ota_root" ]; then
    [[ $ota_url =~ ^https?://[^[:space:]]+$ ]] || die "--ota-url must be http(s)://HOST/PATH of the model repository"
    [ -n "$ota_root" ] || die "--ota-url needs --ota-root (the repository's root.json)"
    [ "$dry_run" = 1 ] || [ -r "$ota_root" ] || die "cannot read $ota_root"
    [[ $ota_channel =~ ^[a-z0-9][a-z0-9-]{0,31}$ ]] || die "--ota-channel must be lower-case letters, digits or -"
fi
if [ -z "$platform" ]; then
    platform=debian
    grep -qs "Raspberry Pi" /proc/device-tree/model && platform=pi
fi
[ "$platform" = pi ] || [ "$platform" = debian ] || die "--platform must be pi or debian"
[ "$dry_run" = 1 ] || [ "$(id -u)" -eq 0 ] || die "run as root (sudo), or with --dry-run"

run() {  # run a command, or print it
    if [ "$dry_run" = 1 ]; then echo "+ $*"; else "$@"; fi
}

write() {  # write PATH MODE OWNER (content on stdin), or print it
    local path=$1 mode=$2 owner=$3 content
    content=$(cat)
    if [ "$dry_run" = 1 ]; then
        printf '+ write %s (mode %s, owner %s):\n%s\n+ end %s\n' "$path" "$mode" "$owner" "$content" "$path"
    else
        install -D -m "$mode" -o "${owner%:*}" -g "${owner#*:}" /dev/null "$path"
        printf '%s\n' "$content" >"$path"
    fi
}

packages=(python3 python3-venv python3-pip mosquitto-clients ca-certificates rsync)
[ "$platform" = pi ] && packages+=(python3-picamera2)
echo "provision: $device_id on $platform, broker $broker_host:$broker_port (tls $tls), tpu $tpu"
run apt-get update
run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}"

if [ "$tpu" = 1 ]; then
    run sh -c "curl -fsSL $CORAL_KEY_URL | gpg --dearmor --yes -o /usr/share/keyrings/coral-edgetpu.gpg"
    echo "$CORAL_REPO" | write /etc/apt/sources.list.d/coral-edgetpu.list 0644 root:root
    run apt-get update
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y libedgetpu1-std
fi

run sh -c "getent group apex >/dev/null || groupadd --system apex"
write /etc/udev/rules.d/65-appliance-edgetpu.rules 0644 root:root <<'RULES'
# Coral Edge TPU: USB Accelerator before (1a6e:089a) and after (18d1:9302) firmware load, and PCIe.
SUBSYSTEMS=="usb", ATTRS{idVendor}=="1a6e", ATTRS{idProduct}=="089a", GROUP="plugdev", MODE="0660"
SUBSYSTEMS=="usb", ATTRS{idVendor}=="18d1", ATTRS{idProduct}=="9302", GROUP="plugdev", MODE="0660"
SUBSYSTEM=="apex", GROUP="apex", MODE="0660"
RULES
# No udev daemon (a chroot, an image being prepared): the rules apply from the next boot.
run sh -c "udevadm control --reload-rules 2>/dev/null || echo 'provision: udev not running; rules apply at next boot'"

run sh -c "id -u $USER_NAME >/dev/null 2>&1 || useradd --system --home-dir /var/lib/appliance --shell /usr/sbin/nologin $USER_NAME"
run usermod -a -G video,plugdev,apex "$USER_NAME"

# --system-site-packages: picamera2 and libcamera come from apt, not PyPI.
run mkdir -p "$PREFIX"
run rsync -a --delete --exclude .venv --exclude .git "$SRC/" "$PREFIX/src/"
run python3 -m venv --system-site-packages "$PREFIX/.venv"
run "$PREFIX/.venv/bin/pip" install --quiet "$PREFIX/src"
run ln -sfn "$PREFIX/src/models" "$PREFIX/models"
run ln -sfn "$PREFIX/src/docs" "$PREFIX/docs"

if [ "$tls" = true ]; then
    run install -D -m 0644 "$ca" "$ETC/certs/ca.crt"
    run install -D -m 0644 "$cert" "$ETC/certs/device.crt"
    run install -D -m 0640 -g "$USER_NAME" "$key" "$ETC/certs/device.key"
fi
ota_lines=""
if [ -n "$ota_url" ]; then
    run install -D -m 0644 "$ota_root" "$ETC/ota-root.json"
    ota_lines="
[ota]
enabled = true
repository_url = \"$ota_url\"
trusted_root = \"$ETC/ota-root.json\"
channel = \"$ota_channel\""
fi
camera="images:$PREFIX/src/demo?fps=15"
[ "$platform" = pi ] && camera=picamera2
tls_lines=""
[ "$tls" = true ] && tls_lines="tls = true
ca_file = \"$ETC/certs/ca.crt\"
cert_file = \"$ETC/certs/device.crt\"
key_file = \"$ETC/certs/device.key\""
write "$ETC/config.toml" 0640 "root:$USER_NAME" <<CONFIG
# Written by deploy/provision.sh. Every key: $PREFIX/src/deploy/config.example.toml
device_id = "$device_id"
state_dir = "/var/lib/appliance"

[models]
manifest = "$PREFIX/models/manifest.toml"

[camera]
source = "$camera"

[mqtt]
host = "$broker_host"
port = $broker_port
$tls_lines
$ota_lines
CONFIG
run "$PREFIX/.venv/bin/appliance" config check "$ETC/config.toml"
# So that an operator's `appliance detect ...` or `appliance tpus` in a shell uses the same config.
write /etc/profile.d/appliance.sh 0644 root:root <<PROFILE
export APPLIANCE_CONFIG=$ETC/config.toml
export PATH="\$PATH:$PREFIX/.venv/bin"
PROFILE

run install -m 0644 "$SRC/systemd/appliance.service" /etc/systemd/system/appliance.service
if [ "$start" = 1 ]; then
    run systemctl daemon-reload
    run systemctl enable --now appliance.service
else  # --no-start: no running systemd here (a chroot, an image being prepared); start at next boot
    run systemctl enable appliance.service
fi
echo "provision: done. Watch it come online: mosquitto_sub -t 'appliance/$device_id/status' (with the site's TLS options)"
