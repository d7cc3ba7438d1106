"""The boot test's machine: a copy of the image with the boot partition's files on it, booted by QEMU
(TCG: a KVM guest does not run on these build machines) with user-mode networking only, and reached
over SSH on a forwarded loopback port.

amd64 boots the image's own EFI loader under OVMF, as an x86 box would. arm64 boots `-M virt`, which
is no Raspberry Pi: QEMU loads the kernel and initrd the image's FAT partition holds for the Pi
firmware (-kernel/-initrd) with the command line cmdline.txt gives, less the Pi's serial console.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SECTOR = 512
# QEMU's user-mode network: the guest sees the host's loopback services at this address.
HOST_FROM_GUEST = "10.0.2.2"


class BootTestError(Exception):
    """A check of the boot test failed; the message says which and what was seen."""


def run(
    *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, check=False, env=env)
    if check and result.returncode != 0:
        raise BootTestError(f"{shlex.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def wait_for(what: str, condition: Callable[[], object], timeout: float, every: float = 1.0) -> object:
    """Polls until condition() is truthy and returns it, or fails naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BootTestError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@dataclass(frozen=True)
class Partition:
    start: int  # bytes
    size: int


def partitions(image: Path) -> list[Partition]:
    """The image's MBR partitions, from sfdisk's dump (no loop devices needed)."""
    dump = run("sfdisk", "--dump", str(image)).stdout
    found = re.findall(r"start=\s*(\d+), size=\s*(\d+)", dump)
    return [Partition(int(start) * SECTOR, int(size) * SECTOR) for start, size in found]


class BootPartition:
    """The FAT partition of an image file, read and written with mtools at its byte offset."""

    def __init__(self, image: Path) -> None:
        self.target = f"{image}@@{partitions(image)[0].start}"

    def put(self, source: Path, name: str) -> None:
        run("mcopy", "-o", "-i", self.target, str(source), f"::/{name}", env=_mtools_env())

    def get(self, name: str, destination: Path) -> None:
        run("mcopy", "-o", "-i", self.target, f"::/{name}", str(destination), env=_mtools_env())

    def names(self) -> list[str]:
        listing = run("mdir", "-b", "-i", self.target, "::/", env=_mtools_env()).stdout
        return [line.rsplit("/", 1)[-1] for line in listing.splitlines() if line.strip()]


def _mtools_env() -> dict[str, str]:
    return {**os.environ, "MTOOLS_SKIP_CHECK": "1"}


@dataclass
class Machine:
    """One QEMU process booting `disk`; `serial` collects the console."""

    arch: str
    disk: Path
    work: Path
    ssh_port: int
    key: Path
    memory_mib: int = 2048
    accel: str = "tcg"
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0

    @property
    def serial(self) -> Path:
        return self.work / "serial.log"

    def command(self) -> list[str]:
        net = f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22"
        # aarch64: max with QEMU's own pointer-authentication algorithm; the architected one (QARMA) is
        # by far the slowest thing TCG emulates, and the guest cannot tell the difference.
        cpu = "max" if self.arch == "amd64" else "max,pauth-impdef=on"
        if self.accel == "kvm":
            cpu = "host"
        common = [
            *("-accel", self.accel, "-cpu", cpu, "-smp", "2", "-m", str(self.memory_mib)),
            *("-drive", f"file={self.disk},format=raw,if=virtio,cache=unsafe"),
            # romfile= : no PXE option ROM, so the firmware does not try a network boot first.
            *("-netdev", net, "-device", "virtio-net-pci,netdev=net0,romfile="),
            *("-display", "none", "-monitor", "none", "-serial", f"file:{self.serial}"),
            *("-device", "virtio-rng-pci"),
        ]
        if self.arch == "amd64":
            return ["qemu-system-x86_64", "-machine", "q35", "-bios", "/usr/share/ovmf/OVMF.fd", *common]
        kernel, initrd, append = self.pi_boot_files()
        return [
            *("qemu-system-aarch64", "-machine", "virt"),
            *("-kernel", str(kernel), "-initrd", str(initrd), "-append", append),
            *common,
        ]

    def pi_boot_files(self) -> tuple[Path, Path, str]:
        """The kernel, initrd and command line the Pi firmware would load, from the image's FAT partition."""
        boot = BootPartition(self.disk)
        names = boot.names()
        kernel = sorted(n for n in names if n.startswith("vmlinuz-"))[-1]
        initrd = sorted(n for n in names if n.startswith("initrd.img-"))[-1]
        for name in (kernel, initrd, "cmdline.txt"):
            boot.get(name, self.work / name)
        # The Pi's UART is ttyS1 and its screen tty0; QEMU's virt board has a PL011 at ttyAMA0.
        cmdline = (self.work / "cmdline.txt").read_text().split()
        append = [arg for arg in cmdline if not arg.startswith("console=")] + ["console=ttyAMA0"]
        return self.work / kernel, self.work / initrd, " ".join(append)

    def start(self) -> None:
        self.serial.unlink(missing_ok=True)
        log = (self.work / "qemu.log").open("ab")
        self.started = time.monotonic()
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=log, stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def console(self) -> str:
        return self.serial.read_text(errors="replace") if self.serial.exists() else ""

    def ssh_args(self, *extra: str) -> list[str]:
        return [
            *("ssh", "-p", str(self.ssh_port), "-i", str(self.key)),
            # The guest makes its host keys on its first boot: nothing to pin them against here.
            *("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"),
            *("-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "-o", "BatchMode=yes"),
            *extra,
            "admin@127.0.0.1",
        ]

    def ssh(
        self, command: str, check: bool = True, timeout: float = 120, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        if not self.alive():
            raise BootTestError(f"QEMU exited; console ends with:\n{self.console()[-3000:]}")
        result = subprocess.run(
            [*self.ssh_args(), command],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise BootTestError(
                f"in the guest, {command!r} failed ({result.returncode}): {result.stderr.strip()}"
                f" {result.stdout.strip()}"
            )
        return result

    def wait_for_ssh(self, timeout: float) -> None:
        def answers() -> bool:
            if not self.alive():
                raise BootTestError(f"QEMU exited; console ends with:\n{self.console()[-3000:]}")
            try:
                return self.ssh("true", check=False, timeout=30).returncode == 0
            except subprocess.TimeoutExpired:
                return False

        wait_for("SSH to answer as admin with the boot partition's key", answers, timeout, every=3)

    def reboot(self, timeout: float, meanwhile: Callable[[], None] | None = None) -> float:
        """`systemctl reboot` in the guest, then `meanwhile()`; returns once SSH answers from the new boot
        (another boot id), with the host monotonic time the reboot was asked for."""
        boot_id = self.ssh("cat /proc/sys/kernel/random/boot_id").stdout.strip()
        asked = time.monotonic()
        self.ssh("sudo systemctl --no-block reboot")
        if meanwhile is not None:
            meanwhile()

        def new_boot() -> bool:
            try:
                answer = self.ssh("cat /proc/sys/kernel/random/boot_id", check=False, timeout=30)
            except subprocess.TimeoutExpired:
                return False
            return answer.returncode == 0 and answer.stdout.strip() not in ("", boot_id)

        wait_for("SSH to answer from the rebooted guest", new_boot, timeout, every=3)
        return asked

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None


def prepare_disk(image: Path, disk: Path, grow_mib: int) -> int:
    """A sparse copy of the image, `grow_mib` larger, as a card bigger than the image is; returns the size
    of the root partition before the first boot grows it."""
    if not shutil.which("mcopy") or not shutil.which("sfdisk"):
        raise BootTestError("mtools and fdisk are needed (make boot-test installs them)")
    run("cp", "--sparse=always", str(image), str(disk))
    with disk.open("r+b") as handle:
        handle.truncate(disk.stat().st_size + grow_mib * 1024 * 1024)
    return partitions(disk)[1].size
