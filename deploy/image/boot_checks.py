"""The boot test's checks inside the guest, over SSH as admin (sudo needs no password: admin has none).
Each waits with a deadline and raises BootTestError naming what it saw."""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from boot_vm import BootTestError, Machine, wait_for

APP = "/opt/appliance/.venv/bin/appliance"
AS_APPLIANCE = "sudo -u appliance env APPLIANCE_CONFIG=/etc/appliance/config.toml"


@dataclass(frozen=True)
class Unit:
    active: str
    sub: str
    restarts: int
    pid: int
    status: int
    result: str


def unit(vm: Machine, name: str = "appliance") -> Unit:
    keys = ["ActiveState", "SubState", "NRestarts", "MainPID", "ExecMainStatus", "Result"]
    out = vm.ssh(f"systemctl show {name} " + " ".join(f"-p {key}" for key in keys)).stdout
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return Unit(
        values["ActiveState"],
        values["SubState"],
        int(values["NRestarts"] or 0),
        int(values["MainPID"] or 0),
        int(values["ExecMainStatus"] or 0),
        values["Result"],
    )


def wait_running(vm: Machine, timeout: float) -> Unit:
    def running() -> Unit | None:
        state = unit(vm)
        return state if (state.active, state.sub) == ("active", "running") else None

    found = wait_for("appliance.service to be active (running)", running, timeout, every=2)
    assert isinstance(found, Unit)
    return found


def journal(vm: Machine, name: str, since: str = "") -> str:
    return vm.ssh(f"sudo journalctl -b --no-pager -o short-monotonic -u {name} {since}").stdout


def ready_seconds(vm: Machine) -> list[float]:
    """When systemd took READY=1 from the daemon, in seconds since the kernel started: for Type=notify
    it logs "Started appliance.service - <description>" only then."""
    text = journal(vm, "appliance")
    return [
        float(m.group(1)) for m in re.finditer(r"^\[\s*([\d.]+)\].*Started appliance\.service", text, re.M)
    ]


def runs_as(vm: Machine, pid: int) -> str:
    return vm.ssh(f"stat -c %U /proc/{pid}").stdout.strip()


def secrets(vm: Machine) -> dict[str, str]:
    """Where the first boot put the secrets, and what is left of them on the FAT partition."""
    key = vm.ssh("sudo stat -c '%a %U:%G' /etc/appliance/certs/device.key").stdout.strip()
    on_card = vm.ssh("sudo ls /boot/firmware").stdout.split()
    passwords = vm.ssh("sudo awk -F: '$2 !~ /^[*!]/ {print $1}' /etc/shadow").stdout.split()
    sshd = vm.ssh(
        "sudo sshd -T | grep -Ei '^(passwordauthentication|kbdinteractiveauthentication|permitrootlogin)'"
    )
    if key != "600 appliance:appliance":
        raise BootTestError(f"/etc/appliance/certs/device.key is {key}, not 600 appliance:appliance")
    leftover = sorted({"device.key", "authorized_keys"} & set(on_card))
    if leftover:
        raise BootTestError(f"still on the boot partition after the first boot: {leftover}")
    if passwords:
        raise BootTestError(f"accounts with a password: {passwords}")
    settings = sshd.stdout.lower().split()
    if (
        "passwordauthentication" not in settings
        or settings[settings.index("passwordauthentication") + 1] != "no"
    ):
        raise BootTestError(f"sshd allows passwords: {sshd.stdout}")
    return {"device.key": key, "boot partition": " ".join(on_card), "sshd": " ".join(settings)}


def password_login_refused(vm: Machine) -> str:
    """A password login is not even offered: the server answers publickey only."""
    methods = "PreferredAuthentications=password,keyboard-interactive"
    args = vm.ssh_args("-o", "PubkeyAuthentication=no", "-o", methods)
    result = subprocess.run([*args, "true"], capture_output=True, text=True, check=False, timeout=60)
    if result.returncode == 0 or "Permission denied (publickey)" not in result.stderr:
        raise BootTestError(f"a login without a key was not refused as publickey-only: {result.stderr}")
    return result.stderr.strip()


def security_score(vm: Machine) -> float:
    out = vm.ssh("sudo systemd-analyze security --no-pager appliance.service", check=False).stdout
    match = re.search(r"Overall exposure level for appliance.service: (\d+\.\d+)", out)
    if not match:
        raise BootTestError(f"no exposure level from systemd-analyze security:\n{out[-2000:]}")
    return float(match.group(1))


def kill_and_restart(vm: Machine, timeout: float) -> Unit:
    """kill -9 of the daemon: systemd restarts it (Restart=on-failure) and it says READY again."""
    before = unit(vm)
    readies = len(ready_seconds(vm))
    vm.ssh(f"sudo kill -9 {before.pid}")
    wait_for("systemd to restart the killed daemon", lambda: unit(vm).restarts > before.restarts, timeout, 2)
    wait_for("READY=1 from the restarted daemon", lambda: len(ready_seconds(vm)) > readies, timeout, 2)
    after = wait_running(vm, timeout)
    if "status=9/KILL" not in journal(vm, "appliance"):
        raise BootTestError("the journal does not show the daemon killed by signal 9")
    return after


STALL = "/run/systemd/system/appliance.service.d/boot-test-stall.conf"


def watchdog_restart(vm: Machine, timeout: float) -> float:
    """A camera that delivers nothing (a V4L2 device that is not there): READY comes, WATCHDOG=1 never
    does, and systemd restarts the daemon WatchdogSec after READY. Returns READY-to-restart seconds."""
    vm.ssh(
        f"sudo mkdir -p {STALL.rsplit('/', 1)[0]} && printf '[Service]\\nEnvironment="
        f"APPLIANCE_CAMERA__SOURCE=v4l2:/dev/video99\\n' | sudo tee {STALL} >/dev/null && "
        "sudo systemctl daemon-reload && sudo systemctl reset-failed appliance && "
        "sudo systemctl restart --no-block appliance"
    )
    readies = len(ready_seconds(vm))
    wait_for("READY=1 with the stalled camera", lambda: len(ready_seconds(vm)) > readies, timeout, 2)
    ready_at = ready_seconds(vm)[-1]

    def watchdog_line() -> float | None:
        for match in re.finditer(r"^\[\s*([\d.]+)\].*Watchdog timeout", journal(vm, "appliance"), re.M):
            if float(match.group(1)) > ready_at:
                return float(match.group(1))
        return None

    fired = wait_for("systemd's watchdog to fire on the stalled camera", watchdog_line, 30 + timeout, 2)
    assert isinstance(fired, float)
    wait_for(
        "systemd to restart the daemon after the watchdog",
        lambda: "Scheduled restart job" in journal(vm, "appliance")[-3000:],
        60,
        2,
    )
    vm.ssh(
        f"sudo rm -f {STALL} && sudo systemctl daemon-reload && sudo systemctl reset-failed appliance && "
        "sudo systemctl restart --no-block appliance"
    )
    return fired - ready_at


def outbox_depth(vm: Machine) -> int:
    query = (
        "import sqlite3; db = sqlite3.connect('/var/lib/appliance/outbox.sqlite'); "
        "print(db.execute('select count(*) from outbox').fetchone()[0])"
    )
    return int(vm.ssh(f'{AS_APPLIANCE} /opt/appliance/.venv/bin/python -c "{query}"').stdout.strip())


def model_slots(vm: Machine) -> dict[str, Any]:
    """The active model of each kind, its version and slot (`appliance ota status`, less its clocks)."""
    models: dict[str, Any] = json.loads(vm.ssh(f"{AS_APPLIANCE} {APP} ota status --json").stdout)["models"]
    return models


def bad_config(vm: Machine, timeout: float) -> Unit:
    """After a reboot with a bad appliance.toml: the unit stopped with 78, was not restarted, and the
    journal names the key. Checked again after two RestartSec periods, so a loop would show."""

    def stopped() -> Unit | None:
        state = unit(vm)
        return state if state.active in ("failed", "inactive") and state.status == 78 else None

    wait_for("appliance.service to stop with exit status 78", stopped, timeout, 2)
    # What is checked is the absence of a restart: it must hold for two RestartSec=5 periods.
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        state = unit(vm)
        if state.restarts != 0 or state.active not in ("failed", "inactive"):
            raise BootTestError(f"after a bad config the unit is {state} (restarted or running again)")
        time.sleep(1)
    if "mqtt.hots" not in journal(vm, "appliance"):
        raise BootTestError("the appliance's journal does not name the bad key mqtt.hots")
    if "mqtt.hots" not in journal(vm, "appliance-setup"):
        raise BootTestError("appliance-setup's journal does not name the bad key mqtt.hots")
    return state
