"""Quick checks of the flashable image's build (deploy/image), for `make test`: the image itself is built by
`make image` and booted by `make boot-test`, which take far longer. These catch the mistakes that break
an image before anyone builds one: a pinned wheel that does not exist for the Pi's architecture, a lock
that no longer satisfies pyproject.toml, a script shellcheck rejects, a plan without its kernel."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "deploy" / "image"
SCRIPTS = sorted(
    str(path.relative_to(ROOT))
    for path in [*IMAGE.glob("*.sh"), IMAGE / "rootfs" / "usr" / "local" / "sbin" / "appliance-setup"]
)


def pins() -> dict[str, tuple[str, set[str]]]:
    """deploy/image/requirements.txt as {name: (version, sha256 hashes)}."""
    text = (IMAGE / "requirements.txt").read_text().replace("\\\n", " ")
    found: dict[str, tuple[str, set[str]]] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            spec, *hashes = line.split()
            name, version = spec.split("==")
            found[canonicalize_name(name)] = (version, {h.removeprefix("--hash=sha256:") for h in hashes})
    return found


def resolve(pyarch: str, requirements: Path, tmp_path: Path) -> dict[str, tuple[str, str]]:
    """What pip resolves `requirements` to from wheels alone, for CPython 3.11 on Debian 12 (glibc 2.36),
    as {name: (version, sha256 of the wheel)}. Reads the index's metadata; downloads no wheel."""
    platforms = [f"manylinux2014_{pyarch}", *(f"manylinux_2_{minor}_{pyarch}" for minor in range(17, 37))]
    report = tmp_path / f"{pyarch}.json"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed"]
        + ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
        + [arg for platform in platforms for arg in ("--platform", platform)]
        + ["--target", str(tmp_path / "target"), "--report", str(report), "-r", str(requirements)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"the pinned set does not resolve for {pyarch}:\n{result.stderr[-3000:]}"
    return {
        canonicalize_name(item["metadata"]["name"]): (
            item["metadata"]["version"],
            item["download_info"]["archive_info"]["hashes"]["sha256"],
        )
        for item in json.loads(report.read_text())["install"]
    }


@pytest.mark.parametrize("pyarch", ["aarch64", "x86_64"])
@pytest.mark.heavy
def test_the_pinned_wheels_exist_for_each_architecture_with_their_hashes(pyarch: str, tmp_path: Path) -> None:
    pinned = pins()
    plain = tmp_path / "requirements.txt"
    plain.write_text("".join(f"{name}=={version}\n" for name, (version, _) in pinned.items()))
    resolved = resolve(pyarch, plain, tmp_path)
    # Closed: nothing pulled in that is not pinned, nothing pinned that is not needed.
    assert set(resolved) == set(pinned), (
        f"unpinned: {sorted(set(resolved) - set(pinned))}, unused: {sorted(set(pinned) - set(resolved))}"
    )
    for name, (version, digest) in resolved.items():
        assert version == pinned[name][0]
        assert digest in pinned[name][1], f"{name} {version} for {pyarch}: the index's wheel has another hash"


def test_the_lock_satisfies_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = pins()
    for dependency in project["dependencies"]:
        requirement = Requirement(dependency)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is a dependency but is not in deploy/image/requirements.txt"
        assert requirement.specifier.contains(pinned[name][0]), (
            f"{name}=={pinned[name][0]} breaks {requirement}"
        )


@pytest.mark.parametrize("script", SCRIPTS)
def test_image_scripts_are_clean_under_shellcheck(script: str) -> None:
    assert shutil.which("shellcheck"), "shellcheck is needed (make test installs it)"
    result = subprocess.run(["shellcheck", script], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("arch", "wanted"),
    [
        ("arm64", ["linux-image-arm64", "raspi-firmware", "firmware-brcm80211"]),
        ("amd64", ["linux-image-amd64"]),
    ],
)
def test_the_build_plan_has_a_kernel_and_boot_files(arch: str, wanted: list[str]) -> None:
    result = subprocess.run(
        [str(IMAGE / "build.sh"), "--plan", "--arch", arch], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    packages = re.search(r"^packages: (.*)$", result.stdout, re.M)
    assert packages, result.stdout
    for package in [*wanted, "systemd-sysv", "openssh-server", "python3-venv", "cloud-guest-utils"]:
        assert package in packages.group(1).split()
    assert (
        f"appliance-{tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['version']}-{arch}.img"
        in (result.stdout)
    )


def test_an_unknown_architecture_is_refused() -> None:
    result = subprocess.run(
        [str(IMAGE / "build.sh"), "--plan", "--arch", "armhf"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 64
    assert "--arch must be arm64 or amd64" in result.stderr


def test_the_image_has_the_same_edge_tpu_rules_as_provisioning() -> None:
    provision = (ROOT / "deploy" / "provision.sh").read_text()
    rules = (IMAGE / "rootfs" / "etc" / "udev" / "rules.d" / "65-appliance-edgetpu.rules").read_text()
    block = re.search(r"<<'RULES'\n(.*?)RULES\n", provision, re.S)
    assert block, "provision.sh no longer writes the Edge TPU rules from a RULES heredoc"
    assert rules == block.group(1)


def test_ssh_takes_keys_only() -> None:
    sshd = (IMAGE / "rootfs" / "etc" / "ssh" / "sshd_config.d" / "appliance.conf").read_text()
    settings = dict(line.split(None, 1) for line in sshd.splitlines() if line and not line.startswith("#"))
    assert settings["PasswordAuthentication"] == "no"
    assert settings["KbdInteractiveAuthentication"] == "no"
    assert settings["PermitRootLogin"] == "no"


def test_the_example_appliance_toml_is_a_valid_config() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "device", "config", "check", str(IMAGE / "appliance.toml.example")],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.heavy
def test_the_wheel_carries_every_file_the_packages_read(tmp_path: Path) -> None:
    """The image (and provision.sh) install the appliance from a wheel, not from the source tree: a data
    file the code opens next to itself (the live view's page, for one) must be in it. Found by the boot
    test: the live view's thread died on a missing device/live/static."""
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = tmp_path.glob("appliance-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packaged = set(archive.namelist())
    tracked = subprocess.run(
        ["git", "ls-files", "device", "pricing"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    data = [name for name in tracked if not name.endswith((".py", ".pyi")) and "/" in name]
    assert data, "no data files tracked under device/ or pricing/: the check would prove nothing"
    assert [name for name in data if name not in packaged] == []


def test_what_runs_on_a_device_reads_nothing_under_tests() -> None:
    """The image leaves tests/ out (deploy/image/build.sh): a device-side path into it would be a file
    that is missing on every device. `appliance bench models` and `bench outbox` read two once."""
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for package in ("device", "pricing", "fleet", "rigs")
        for path in sorted((ROOT / package).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"""["']tests["']|["']tests/""", line) and not line.lstrip().startswith("#")
    ]
    assert found == []
