#!/usr/bin/env bash
# The raw disk image from a finished root filesystem tree, without loop devices or mounts (they are not
# available in every build container): the ext4 root made from the tree by mke2fs -d, the FAT partition
# by mkfs.vfat and mtools, both written into one MBR-partitioned file.
#
#   assemble.sh ROOTFS IMAGE ARCH BOOT_MIB ROOT_FREE_MIB BOOT_LABEL ROOT_LABEL
#
# MBR, not GPT: the Raspberry Pi 4's boot ROM reads only an MBR's first FAT partition (type 0x0c) on an
# SD card. On amd64 that partition is an EFI system partition (type 0xef) holding EFI/BOOT/BOOTX64.EFI,
# which UEFI firmware boots from an MBR disk as well.
set -euo pipefail
rootfs=$1 image=$2 arch=$3 boot_mib=$4 root_free_mib=$5 boot_label=$6 root_label=$7
export PATH=$PATH:/usr/sbin:/sbin
tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/appliance-assemble.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# The first partition starts at 4 MiB: SD cards erase in blocks of up to 4 MiB, and the Pi's ROM and
# every partitioning tool are happy with it.
offset_mib=4

space() { # what takes the space, for the build log and docs/benchmarks.md
    local site=$rootfs/opt/appliance/.venv/lib/python3.11/site-packages
    echo "assemble: what takes the space (MiB; the whole tree $(du -sxm "$rootfs" | cut -f1))"
    du -xsm "$rootfs"/usr/lib/modules "$rootfs"/usr/lib/firmware "$rootfs"/opt/appliance/.venv \
        "$rootfs"/opt/appliance/src "$rootfs"/usr/lib/python3.11 \
        "$rootfs"/usr/lib/*-linux-gnu "$rootfs"/boot "$rootfs"/var "$rootfs"/usr/share 2>/dev/null
    du -xsm "$site"/* 2>/dev/null | sort -rn | sed 6q
}
space | sed "s|$rootfs||; s|/opt/appliance/.venv/lib/python3.11/site-packages/|venv: |; s/^/  /" || true

# The boot partition's files come out of the tree, which keeps /boot/firmware as the mount point.
mkdir -p "$tmp/boot"
cp -a "$rootfs/boot/firmware/." "$tmp/boot/"
find "$rootfs/boot/firmware" -mindepth 1 -delete

used_mib=$(du -sxm "$rootfs" | cut -f1)
# On top of the files: ext4's inode tables and bitmaps (about 3% here, measured with dumpe2fs) and a
# 16 MiB journal (mke2fs would make 64 MiB; the first boot's resize2fs keeps it, enough for an SD card).
journal_mib=16
root_mib=$((used_mib * 103 / 100 + journal_mib + root_free_mib))
total_mib=$((offset_mib + boot_mib + root_mib))
echo "assemble: FAT $boot_mib MiB, root $root_mib MiB ($used_mib MiB of files), image $total_mib MiB"

mkfs.vfat -F 32 -n "$boot_label" -C "$tmp/boot.img" $((boot_mib * 1024)) >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -s -p -m -i "$tmp/boot.img" "$tmp/boot/"* ::/

# -d copies the tree with owners, modes, links, device nodes and extended attributes (file capabilities).
# The boot loaders and fstab find both filesystems by label, never by UUID or device name.
mke2fs -q -t ext4 -L "$root_label" -d "$rootfs" -E root_owner=0:0 -m 1 -J size=$journal_mib \
    "$tmp/root.img" "${root_mib}M"
# The space left, for the build log: the first boot needs a few MiB (host keys, journal, state).
echo "assemble: root filesystem $(dumpe2fs -h "$tmp/root.img" 2>/dev/null |
    awk -F: '/^Free blocks/ { free = $2 } /^Block size/ { size = $2 } END { printf "%d MiB free", free * size / 1048576 }')"

rm -f "$image"
truncate -s "${total_mib}M" "$image"
boot_type=c
[ "$arch" = amd64 ] && boot_type=ef
sfdisk --quiet "$image" <<TABLE
label: dos
start=${offset_mib}MiB, size=${boot_mib}MiB, type=$boot_type, bootable
start=$((offset_mib + boot_mib))MiB, size=${root_mib}MiB, type=83
TABLE
dd if="$tmp/boot.img" of="$image" bs=1M seek="$offset_mib" conv=notrunc,sparse status=none
dd if="$tmp/root.img" of="$image" bs=1M seek=$((offset_mib + boot_mib)) conv=notrunc,sparse status=none
echo "assemble: $image"
