"""Deployment files: unit files verified by systemd, scripts clean under shellcheck, provisioning dry runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from .cli_helpers import appliance
from .conftest import ROOT

SCRIPTS = [
    "deploy/provision.sh",
    "deploy/pki.sh",
    "deploy/apt-ensure.sh",
    "deploy/mosquitto/build-share-guard.sh",
    "deploy/demo.sh",
    "deploy/firstboot/firstboot.sh",
    ".ci/run",
]
ARGS = [
    "--device-id",
    "shop-7-cam-1",
    "--broker",
    "mqtts://broker.site.lan:8883",
    "--ca",
    "ca.crt",
    "--cert",
    "d.crt",
    "--key",
    "d.key",
]


UNITS = ["appliance.service", "pricing.service", "fleet-exporter.service"]


@pytest.mark.parametrize("unit", UNITS)
def test_units_pass_systemd_analyze_verify(unit: str, tmp_path: Path) -> None:
    verify = shutil.which("systemd-analyze")
    assert verify, "systemd-analyze is needed (make test installs systemd)"
    text = (ROOT / "systemd" / unit).read_text()
    # The programs live in /opt/appliance on a device; verify insists that they exist, so point at one.
    (tmp_path / unit).write_text(re.sub(r"/opt/appliance/\.venv/bin/[a-z-]+", "/bin/true", text))
    result = subprocess.run(
        [verify, "verify", str(tmp_path / unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_the_appliance_unit_keeps_its_promises() -> None:
    text = (ROOT / "systemd" / "appliance.service").read_text()
    for line in (
        "Type=notify",
        "WatchdogSec=30",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "User=appliance",
        "SupplementaryGroups=video plugdev apex",
        "StateDirectory=appliance",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "DevicePolicy=closed",
        # /dev/dma_heap is a folder, which DeviceAllow ignores: the heaps are allowed by their class.
        "DeviceAllow=char-dma_heap rw",
        "DeviceAllow=char-media rw",
        "CapabilityBoundingSet=",
        "MemoryDenyWriteExecute=yes",
        "SystemCallFilter=@system-service",
        "PrivateUsers=yes",
    ):
        assert f"\n{line}\n" in text, line


@pytest.mark.parametrize("unit", UNITS)
def test_units_are_sandboxed_to_an_exposure_of_at_most_2_5(unit: str) -> None:
    analyze = shutil.which("systemd-analyze")
    # Asserted, as the verify test does: a skip here would pass a suite that never checked the sandbox.
    assert analyze, "systemd-analyze is needed (make test installs it with the systemd package)"
    result = subprocess.run(
        [analyze, "security", "--offline=yes", str(ROOT / "systemd" / unit)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+)", result.stdout)
    assert match, f"no overall exposure level in the output:\n{result.stdout}{result.stderr}"
    exposed = "\n".join(line for line in result.stdout.splitlines() if line.startswith("✗"))
    assert float(match.group(1)) <= 2.5, f"{unit} scores {match.group(1)}; still exposed:\n{exposed}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_shellcheck_is_clean(script: str) -> None:
    assert shutil.which("shellcheck"), "shellcheck is needed (make test installs it)"
    result = subprocess.run(["shellcheck", script], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def provision(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "deploy" / "provision.sh"), "--dry-run", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def written(output: str, path: str) -> str:
    match = re.search(rf"\+ write {re.escape(path)} \(.*?\):\n(.*?)\n\+ end {re.escape(path)}", output, re.S)
    assert match, f"{path} is not written"
    return match.group(1)


def test_dry_run_on_a_pi_with_a_coral(tmp_path: Path) -> None:
    result = provision("--platform", "pi", "--tpu", *ARGS)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "python3-picamera2" in out and "libedgetpu1-std" in out and "coral-edgetpu-stable" in out
    assert 'ATTRS{idVendor}=="1a6e", ATTRS{idProduct}=="089a"' in written(
        out, "/etc/udev/rules.d/65-appliance-edgetpu.rules"
    )
    assert "useradd --system" in out and "usermod -a -G video,plugdev,apex appliance" in out
    assert "python3 -m venv --system-site-packages /opt/appliance/.venv" in out
    assert "install -D -m 0640 -g appliance d.key /etc/appliance/certs/device.key" in out
    assert "systemctl enable --now appliance.service" in out
    config = written(out, "/etc/appliance/config.toml")
    assert (
        'source = "picamera2"' in config and 'host = "broker.site.lan"' in config and "tls = true" in config
    )
    # The config it writes is one the daemon accepts.
    (tmp_path / "config.toml").write_text(config)
    assert appliance("config", "check", str(tmp_path / "config.toml")).returncode == 0


def test_dry_run_on_plain_debian_without_a_tpu() -> None:
    result = provision("--platform", "debian", *ARGS)
    assert result.returncode == 0, result.stderr
    assert "python3-picamera2" not in result.stdout and "libedgetpu" not in result.stdout
    assert 'source = "images:/opt/appliance/src/demo?fps=15"' in written(
        result.stdout, "/etc/appliance/config.toml"
    )


def test_dry_run_with_signed_model_updates(tmp_path: Path) -> None:
    root = tmp_path / "root.json"
    root.write_text("{}")  # only installed here; the device verifies it when it first checks
    result = provision(
        "--platform",
        "debian",
        *ARGS,
        "--ota-url",
        "https://models.site.lan/appliance",
        "--ota-root",
        str(root),
        "--ota-channel",
        "beta",
    )
    assert result.returncode == 0, result.stderr
    assert f"install -D -m 0644 {root} /etc/appliance/ota-root.json" in result.stdout
    config = written(result.stdout, "/etc/appliance/config.toml")
    assert 'repository_url = "https://models.site.lan/appliance"' in config and 'channel = "beta"' in config
    (tmp_path / "config.toml").write_text(config)
    checked = appliance("config", "check", "--json", str(tmp_path / "config.toml"))
    assert checked.returncode == 0, checked.stderr
    assert '"enabled": true' in checked.stdout


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--device-id", "d1", "--broker", "mqtt://b", "--ota-url", "https://m/r"], "needs --ota-root"),
        (
            ["--device-id", "d1", "--broker", "mqtt://b", "--ota-url", "ftp://m", "--ota-root", "r"],
            "--ota-url",
        ),
        (["--broker", "mqtt://b"], "--device-id"),
        (["--device-id", "bad id", "--broker", "mqtt://b"], "--device-id"),
        (["--device-id", "d1", "--broker", "http://b"], "--broker"),
        (["--device-id", "d1", "--broker", "mqtts://b"], "mqtts needs --ca, --cert and --key"),
        (["--device-id", "d1", "--broker", "mqtt://b", "--wat"], "unknown option --wat"),
    ],
)
def test_bad_arguments_say_what_is_wrong(args: list[str], error: str) -> None:
    result = provision(*args)
    assert result.returncode == 64 and error in result.stderr


def boot_partition(tmp_path: Path, broker: str) -> Path:
    """What an operator copies to the SD card's boot partition: identity, env and a real EC key."""
    boot = tmp_path / "boot" / "appliance"
    boot.mkdir(parents=True)
    subprocess.run(
        [
            "openssl",
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            str(boot / "device.key"),
        ],
        check=True,
        capture_output=True,
    )
    (boot / "device.key").chmod(0o755)  # what vfat's default fmask shows for every file
    for name in ("ca.crt", "device.crt"):
        (boot / name).write_text("certificate\n")
    (boot / "appliance.env").write_text(f"DEVICE_ID=shop-7-cam-1\nBROKER={broker}\nTPU=0\n")
    return boot


def firstboot(boot: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        "PATH": os.environ["PATH"],
        "BOOT": str(boot),
        "SECRETS_DIR": str(tmp_path / "secrets"),
        "FIRSTBOOT_LOG": str(tmp_path / "firstboot.log"),
        **env,
    }
    script = ROOT / "deploy" / "firstboot" / "firstboot.sh"
    return subprocess.run(["bash", str(script)], env=environ, capture_output=True, text=True, check=False)


def assert_staged(staged: Path, key: bytes) -> None:
    assert staged.read_bytes() == key
    assert stat.S_IMODE(staged.stat().st_mode) == 0o600 and staged.stat().st_uid == os.getuid()
    assert stat.S_IMODE(staged.parent.stat().st_mode) == 0o700 and staged.parent.stat().st_uid == os.getuid()
    assert [p.name for p in staged.parent.iterdir()] == ["device.key"]  # no temporary copy left behind


def test_a_failed_first_boot_leaves_no_key_on_the_boot_partition(tmp_path: Path) -> None:
    # provision.sh itself refuses this broker URL (exit 64), after firstboot.sh has started.
    boot = boot_partition(tmp_path, "http://broker.site.lan")
    key = (boot / "device.key").read_bytes()
    result = firstboot(boot, tmp_path)
    assert not (boot / "device.key").exists(), "the device key is still on the FAT boot partition"
    log = (tmp_path / "firstboot.log").read_text()
    assert result.returncode == 64, log
    staged = tmp_path / "secrets" / "device.key"
    assert_staged(staged, key)
    assert "--broker must be" in log and f"FAILED (exit 64); the device key is kept in {staged}" in log

    # The operator fixes appliance.env and runs firstboot.sh again: it provisions with the kept key
    # (provision.sh for real, as a dry run, since this machine is not a device) and then drops the copy.
    (boot / "appliance.env").write_text("DEVICE_ID=shop-7-cam-1\nBROKER=mqtts://broker.site.lan:8883\n")
    wrapper = tmp_path / "provision-dry-run.sh"
    wrapper.write_text(
        f'#!/bin/sh\nexec {ROOT / "deploy" / "provision.sh"} --dry-run --platform debian "$@"\n'
    )
    wrapper.chmod(0o755)
    retry = firstboot(boot, tmp_path, PROVISION=str(wrapper))
    log = (tmp_path / "firstboot.log").read_text()
    assert retry.returncode == 0, log
    assert f"install -D -m 0640 -g appliance {staged} /etc/appliance/certs/device.key" in log
    assert not staged.exists() and "firstboot: done" in log


def test_cloud_init_takes_the_key_off_the_boot_partition_before_anything_else(tmp_path: Path) -> None:
    # Unpacking the release can fail too (a truncated tarball, a full card): the key moves first.
    lines = (ROOT / "deploy" / "firstboot" / "user-data").read_text().split("\nruncmd:\n")[1]
    commands = [json.loads(line.strip()[2:]) for line in lines.splitlines() if line.startswith("  - ")]
    assert len(commands) == 2 and "tar " not in commands[0][2] and "tar " in commands[1][2]
    boot = boot_partition(tmp_path, "mqtts://broker.site.lan:8883")
    key = (boot / "device.key").read_bytes()
    environ = {"PATH": os.environ["PATH"], "BOOT": str(boot), "SECRETS_DIR": str(tmp_path / "secrets")}
    result = subprocess.run(commands[0], env=environ, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert not (boot / "device.key").exists()
    assert_staged(tmp_path / "secrets" / "device.key", key)
