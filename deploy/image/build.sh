#!/usr/bin/env bash
# `make image`: a raw disk image of Debian 12 with the appliance, for a Raspberry Pi 4 (ARCH=arm64, the
# default) or an x86-64 box with UEFI (ARCH=amd64). Writes dist/appliance-<version>-<arch>.img, its
# .sha256 and -manifest.txt (dpkg and pip versions); docs/flash-and-boot.md says how to flash and boot it.
#
#   sudo deploy/image/build.sh [--arch arm64|amd64] [--out DIR] [--plan]
#
# --plan prints the packages, wheels and layout and exits (no root, nothing downloaded).
# The appliance comes from the commit at HEAD (git archive), never from uncommitted files; its Python
# dependencies are deploy/image/requirements.txt (exact versions and hashes), installed from wheels only.
# Debian packages and wheels are cached in $CACHE (default /var/cache/appliance-image); the root
# filesystem is assembled in $WORK (default /var/tmp/appliance-image-<arch>) and removed at the end.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
SRC="$(cd "$HERE/../.." && pwd)"
arch=${ARCH:-arm64}
out=$SRC/dist
plan=0
while [ $# -gt 0 ]; do
    case "$1" in
    --arch) arch=$2; shift ;;
    --out) out=$2; shift ;;
    --plan) plan=1 ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "image: unknown option $1 (see --help)" >&2; exit 64 ;;
    esac
    shift
done

die() { echo "image: $*" >&2; exit 1; }

case "$arch" in
arm64) pyarch=aarch64 ;;
amd64) pyarch=x86_64 ;;
*) echo "image: --arch must be arm64 or amd64, not '$arch'" >&2; exit 64 ;;
esac

SUITE=bookworm
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
CACHE=${CACHE:-/var/cache/appliance-image}
WORK=${WORK:-/var/tmp/appliance-image-$arch}
PYTHON=${PYTHON:-$SRC/.venv/bin/python}
# Partition sizes. The FAT partition holds the Pi firmware, kernel and initrd (about 90 MB on arm64),
# the files a person drops there, and room for a kernel upgrade's second copy while it is made; on
# amd64 only the EFI loader (GRUB, 4 MB: the kernel is read from the root filesystem) and those files,
# so 64 MiB (FAT32's floor is 32). The root filesystem gets this much free space on top of its contents,
# for what the first boot writes before it grows the filesystem to the whole card.
BOOT_MIB=${BOOT_MIB:-$([ "$arch" = arm64 ] && echo 192 || echo 64)}
ROOT_FREE_MIB=${ROOT_FREE_MIB:-64}
BOOT_LABEL=APPLBOOT
ROOT_LABEL=APPLROOT

# What the device runs: systemd as PID 1 with networkd, resolved and timesyncd; OpenSSH (keys only); the
# Python the venv is made from; growpart and resize2fs for the first boot; wpa_supplicant for Wi-Fi.
packages=(systemd systemd-sysv systemd-resolved systemd-timesyncd udev dbus kmod iproute2 netbase
    openssh-server sudo python3 python3-venv libstdc++6 zlib1g ca-certificates mosquitto-clients
    initramfs-tools zstd cloud-guest-utils fdisk e2fsprogs dosfstools wpasupplicant less procps mawk)
if [ "$arch" = arm64 ]; then
    # The Pi's boot firmware (non-free-firmware), Debian's kernel, and the Pi 4's Wi-Fi firmware.
    packages+=(linux-image-arm64 raspi-firmware firmware-brcm80211)
else
    # GRUB's EFI modules: the image makes its own standalone EFI loader (no grub-install, no NVRAM).
    packages+=(linux-image-amd64 grub-efi-amd64-bin)
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$SRC/pyproject.toml" | head -1)
name=appliance-$version-$arch
image=$out/$name.img

# manylinux tags up to Debian 12's glibc 2.36: pip matches --platform exactly, so each is named.
pip_platforms() {
    local minor
    echo "--platform manylinux2014_$pyarch"
    for minor in $(seq 17 36); do echo "--platform manylinux_2_${minor}_$pyarch"; done
}

if [ "$plan" = 1 ]; then
    echo "image: $image ($SUITE, $arch; FAT $BOOT_MIB MiB labelled $BOOT_LABEL, ext4 root labelled $ROOT_LABEL)"
    echo "packages: ${packages[*]}"
    echo "wheels ($pyarch, cp311): $(grep -c '==' "$HERE/requirements.txt") pinned in deploy/image/requirements.txt"
    echo "pip platforms: $(pip_platforms | tr '\n' ' ')"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "run as root (sudo make image): debootstrapping a root filesystem needs it"
for tool in mmdebstrap mkfs.vfat mcopy sfdisk mke2fs; do
    command -v "$tool" >/dev/null || PATH=$PATH:/usr/sbin command -v "$tool" >/dev/null ||
        die "$tool is missing: make image installs it (deploy/apt-ensure.sh)"
done
export PATH=$PATH:/usr/sbin:/sbin
[ -x "$PYTHON" ] || die "$PYTHON is missing: run make install first"
if [ "$arch" != amd64 ] && [ "$(dpkg --print-architecture)" != "$arch" ]; then
    # Foreign binaries run through qemu-user; binfmt_misc is not always mounted in a container.
    [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    [ -e "/proc/sys/fs/binfmt_misc/qemu-$pyarch" ] || update-binfmts --enable "qemu-$pyarch" ||
        die "cannot register qemu-$pyarch with binfmt_misc (package qemu-user-static)"
fi

started=$(date +%s)
step() { echo "image: [$(($(date +%s) - started)) s] $*"; }
cleanup() {
    # mmdebstrap unmounts what it mounted; this only removes the tree (unless KEEP_WORK=1).
    [ "${KEEP_WORK:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT
rm -rf "$WORK"
mkdir -p "$WORK" "$out" "$CACHE/debs-$arch" "$CACHE/wheels/$pyarch"

commit=$(git -C "$SRC" rev-parse HEAD)
# File times clamped to the commit's, and mmdebstrap's own reproducibility clean-up (logs, caches): two
# builds of one commit then differ only where Debian's archive moved on (compare their manifests).
SOURCE_DATE_EPOCH=$(git -C "$SRC" log -1 --format=%ct)
export SOURCE_DATE_EPOCH
[ -z "$(git -C "$SRC" status --porcelain --untracked-files=no)" ] ||
    echo "image: WARNING: uncommitted changes are not in the image (it is built from $commit)"
step "the appliance at $commit, version $version"
mkdir -p "$WORK/src" "$WORK/wheels"
git -C "$SRC" archive --format=tar HEAD | tar -C "$WORK/src" -xf -
# The device never runs the test suite: its 6.5 MB (photos, the smoke sets, a compiled Edge TPU model)
# stay out of the image, which must fit in 1.5 GB (docs/benchmarks.md). What the rest of the tree links
# into it (the demo photos are links to tests/data) becomes a file of its own first.
find "$WORK/src" -path "$WORK/src/tests" -prune -o -type l -print | while read -r link; do
    target="$(readlink -f "$link")"
    case "$target" in "$WORK/src/tests/"*) cp --remove-destination "$target" "$link" ;; esac
done
rm -rf "$WORK/src/tests"
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/wheels" "$WORK/src"

step "wheels for $pyarch (cached in $CACHE/wheels/$pyarch)"
# shellcheck disable=SC2046 # one word per flag
"$PYTHON" -m pip download --quiet --require-hashes --only-binary=:all: --python-version 3.11 \
    --implementation cp --abi cp311 $(pip_platforms) -d "$CACHE/wheels/$pyarch" -r "$HERE/requirements.txt"
cp "$CACHE/wheels/$pyarch"/*.whl "$WORK/wheels/"

step "Debian $SUITE for $arch with mmdebstrap (packages cached in $CACHE/debs-$arch)"
include=$(IFS=,; echo "${packages[*]}")
# shellcheck disable=SC2016 # mmdebstrap runs each hook with the root directory as $1
mmdebstrap --mode=root --architectures="$arch" --variant=minbase --components=main,non-free-firmware \
    --include="$include" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --setup-hook='mkdir -p "$1/var/cache/apt/archives"' \
    --setup-hook="sync-in $CACHE/debs-$arch /var/cache/apt/archives" \
    --essential-hook='mkdir -p "$1/boot/firmware"' \
    --customize-hook="sync-out /var/cache/apt/archives $CACHE/debs-$arch" \
    --customize-hook="\"$HERE/customize.sh\" \"\$1\" $arch \"$WORK\" \"$HERE\"" \
    --skip=download/empty --skip=essential/unlink \
    "$SUITE" "$WORK/rootfs" \
    "deb $MIRROR $SUITE main non-free-firmware" \
    "deb $MIRROR $SUITE-updates main non-free-firmware" \
    "deb $SECURITY_MIRROR $SUITE-security main non-free-firmware"

# mmdebstrap put the build machine's resolv.conf and hostname back in place of the image's: once more.
ln -sfn ../run/systemd/resolve/stub-resolv.conf "$WORK/rootfs/etc/resolv.conf"
echo appliance >"$WORK/rootfs/etc/hostname"

step "manifest"
manifest=$out/$name-manifest.txt
{
    echo "# $name, built from $commit on $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "# dpkg"
    dpkg-query --admindir="$WORK/rootfs/var/lib/dpkg" -W -f '${Package} ${Version} ${Architecture}\n'
    echo "# pip (/opt/appliance/.venv)"
    "$PYTHON" -m pip list --format=freeze --path "$WORK/rootfs/opt/appliance/.venv/lib/python3.11/site-packages"
} >"$manifest"

"$HERE/assemble.sh" "$WORK/rootfs" "$image" "$arch" "$BOOT_MIB" "$ROOT_FREE_MIB" "$BOOT_LABEL" "$ROOT_LABEL"
(cd "$out" && sha256sum "$name.img" >"$name.img.sha256")
step "done: $image ($(du -h --apparent-size "$image" | cut -f1)) in $(($(date +%s) - started)) s"
echo "image: sha256 $(cut -d' ' -f1 "$image.sha256")"
echo "image: manifest $manifest ($(grep -vc '^#' "$manifest") packages)"
