#!/usr/bin/env bash
# The image's own setup, run by build.sh as mmdebstrap's customize hook (on the build machine, as root,
# with /proc, /sys and /dev mounted in ROOT): the appliance and its venv, the users, the first-boot
# service, networking, SSH, the boot loader files, and what must not be in every device's copy.
#
#   customize.sh ROOT ARCH WORK HERE
set -euo pipefail
root=$1 arch=$2 work=$3 here=$4
in_root() { chroot "$root" "$@"; }
put() { # put MODE FILE: an overlay file from deploy/image/rootfs into the image, with its mode
    install -D -m "$1" "$here/rootfs/$2" "$root/$2"
}

echo "customize: the appliance in /opt/appliance"
mkdir -p "$root/opt/appliance" "$root/tmp/wheels"
cp -a "$work/src" "$root/opt/appliance/src"
cp "$work"/wheels/*.whl "$here/requirements.txt" "$root/tmp/wheels/"
in_root python3 -m venv /opt/appliance/.venv
# From the pinned wheels only, checked against their hashes: nothing comes from an index here, and
# nothing is downloaded on the device. Without SOURCE_DATE_EPOCH, which would make pip compile every
# .pyc in checked-hash mode: each import would then hash its source file, on every start of the daemon.
pip_install() { in_root env -u SOURCE_DATE_EPOCH /opt/appliance/.venv/bin/pip install "$@"; }
pip_install --quiet --no-index --find-links /tmp/wheels --require-hashes \
    --only-binary=:all: -r /tmp/wheels/requirements.txt
appliance_wheel=$(basename "$work"/wheels/appliance-*.whl)
pip_install --quiet --no-index --no-deps "/tmp/wheels/$appliance_wheel"
in_root /opt/appliance/.venv/bin/pip check
rm -rf "$root/tmp/wheels"
for link in models demo docs; do ln -sfn "src/$link" "$root/opt/appliance/$link"; done
# The appliance's built-in default manifest is the package's ../models/manifest.toml (device/config.py):
# right in a source checkout, but in a venv that is site-packages/models, which a wheel does not
# install. The link makes the default true, so an appliance.toml without [models] runs the bundled
# models (found by the boot test: exit 78, "model manifest ... does not exist").
ln -sfn /opt/appliance/src/models "$root/opt/appliance/.venv/lib/python3.11/site-packages/models"
# The same layout as deploy/provision.sh, so docs and tools find things in one place on every device.
in_root /opt/appliance/.venv/bin/appliance --help >/dev/null

echo "customize: users"
in_root sh -c 'getent group apex >/dev/null || groupadd --system apex'
in_root useradd --system --home-dir /var/lib/appliance --shell /usr/sbin/nologin \
    --groups video,plugdev,apex appliance
# The person who administers the device logs in as admin over SSH, with a key from the boot partition
# only. '*' is no password at all (not a locked one, which sshd would refuse for keys too); sudo needs
# none. root gets '*' as well: no account on the image has a password.
in_root useradd --create-home --shell /bin/bash --groups sudo,adm,systemd-journal admin
in_root usermod -p '*' admin
in_root usermod -p '*' root
put 0440 etc/sudoers.d/admin
put 0644 etc/ssh/sshd_config.d/appliance.conf
in_root install -d -m 0700 -o admin -g admin /home/admin/.ssh

echo "customize: first boot, networking, the appliance's unit"
put 0755 usr/local/sbin/appliance-setup
put 0644 etc/systemd/system/appliance-setup.service
put 0644 etc/systemd/network/20-wired.network
put 0644 etc/systemd/network/25-wireless.network
put 0644 etc/systemd/system/systemd-networkd-wait-online.service.d/any.conf
put 0644 etc/udev/rules.d/65-appliance-edgetpu.rules
put 0644 etc/fstab
put 0644 etc/profile.d/appliance.sh
install -m 0644 "$root/opt/appliance/src/systemd/appliance.service" "$root/etc/systemd/system/appliance.service"
in_root install -d -m 0755 /etc/appliance
in_root install -d -m 0750 -g appliance /etc/appliance/certs
in_root systemctl enable appliance-setup.service appliance.service systemd-networkd.service \
    systemd-resolved.service systemd-timesyncd.service ssh.service
# systemd's own first-boot wizard would ask on the console for a locale, a time zone and a root password
# (the machine id is empty, so every device's first boot is a "first boot" to systemd): nobody is there
# to answer, and the image has its own first boot (appliance-setup).
in_root systemctl mask systemd-firstboot.service
# No display manager: the device's goal is multi-user.target (Debian's default names graphical.target).
in_root systemctl set-default multi-user.target
# A journal that survives a reboot: the first-boot lines and a crash before the last reboot stay readable.
mkdir -p "$root/var/log/journal"

if [ "$arch" = arm64 ]; then
    echo "customize: Raspberry Pi boot partition"
    put 0644 etc/default/raspi-firmware
    # The kernel hook wrote config.txt and cmdline.txt when the kernel was installed, before these
    # settings existed: run it again (it also runs on every kernel upgrade on the device).
    in_root env DEB_MAINT_PARAMS=configure /etc/kernel/postinst.d/z50-raspi-firmware
    grep -q "root=LABEL=APPLROOT" "$root/boot/firmware/cmdline.txt" ||
        { echo "customize: cmdline.txt does not boot LABEL=APPLROOT" >&2; exit 1; }
else
    echo "customize: EFI loader"
    # A standalone GRUB on the FAT partition at the removable-media path (no NVRAM entry needed). It
    # boots /vmlinuz and /initrd.img, the links Debian's kernel packages keep on the newest kernel, so
    # an `apt upgrade` of the kernel needs no boot loader update; /vmlinuz.old is the fallback entry.
    mkdir -p "$root/boot/firmware/EFI/BOOT"
    in_root grub-mkimage -O x86_64-efi -p /EFI/BOOT -o /boot/firmware/EFI/BOOT/BOOTX64.EFI \
        part_msdos part_gpt fat ext2 normal linux search search_label configfile echo test \
        all_video efi_gop serial terminal sleep
    install -m 0644 "$here/grub.cfg" "$root/boot/firmware/EFI/BOOT/grub.cfg"
fi
for link in vmlinuz initrd.img; do
    [ -e "$root/$link" ] || { echo "customize: /$link is missing (kernel links)" >&2; exit 1; }
done

echo "customize: what each device must make for itself"
# Host keys and the machine id are made on the first boot (appliance-setup, systemd): a copy in the
# image would be shared by every device written from it.
rm -f "$root"/etc/ssh/ssh_host_*
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
echo appliance >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tappliance\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
ln -sfn ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/*.log
# update-initramfs keeps the previous initrd as .dpkg-bak when it makes one twice during the build
# (30 MB on arm64).
rm -f "$root"/boot/*.dpkg-bak
# No account may have a usable password (the "no default password"): every hash field is * or !.
if awk -F: '$2 !~ /^[*!]/ { print $1; bad = 1 } END { exit !bad }' "$root/etc/shadow"; then
    echo "customize: the accounts above have a password" >&2
    exit 1
fi
