"""deploy/pki.sh with the real openssl: it never replaces a key before the new certificate is signed, never
overwrites the CA's or the broker's files by way of a device name, and --force re-issues cleanly."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import ROOT

PKI = ROOT / "deploy" / "pki.sh"


def pki(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PKI), *map(str, args)], check=False, capture_output=True, text=True)


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *map(str, args)], check=False, capture_output=True, text=True)


def public_key_of_key(path: Path) -> str:
    return openssl("pkey", "-in", path, "-pubout").stdout


def public_key_of_certificate(path: Path) -> str:
    return openssl("x509", "-in", path, "-pubkey", "-noout").stdout


def matches(directory: Path, name: str) -> bool:
    key = public_key_of_key(directory / f"{name}.key")
    return bool(key) and key == public_key_of_certificate(directory / f"{name}.crt")


def valid(directory: Path, name: str) -> bool:
    """Whether the certificate verifies against the CA and its current revocation list."""
    return (
        openssl(
            "verify",
            "-crl_check",
            "-CAfile",
            directory / "ca.crt",
            "-CRLfile",
            directory / "crl.pem",
            directory / f"{name}.crt",
        ).returncode
        == 0
    )


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    assert shutil.which("openssl"), "openssl is needed (make test installs it)"
    directory = tmp_path / "site"
    for args in (("init",), ("broker", "localhost"), ("client", "dev-a")):
        result = pki(args[0], directory, *args[1:])
        assert result.returncode == 0, result.stderr
    return directory


def test_issuing_a_name_twice_changes_nothing(site: Path) -> None:
    before = snapshot(site)
    result = pki("client", site, "dev-a")
    assert result.returncode == 73
    assert "--force" in result.stderr and "nothing was changed" in result.stderr
    assert snapshot(site) == before
    assert matches(site, "dev-a") and valid(site, "dev-a")


def test_force_replaces_key_and_certificate_together_and_revokes_the_old_one(site: Path) -> None:
    old = site / "old-dev-a.crt"
    shutil.copy(site / "dev-a.crt", old)
    old_key = (site / "dev-a.key").read_bytes()
    result = pki("client", site, "dev-a", "--force")
    assert result.returncode == 0, result.stderr
    assert (site / "dev-a.key").read_bytes() != old_key
    assert matches(site, "dev-a") and valid(site, "dev-a")
    assert not valid(site, "old-dev-a")  # revoked: a stolen copy of the old key is no use at the broker
    assert "crl.pem" in result.stdout
    assert (site / "dev-a.key").stat().st_mode & 0o077 == 0


def test_the_broker_certificate_is_replaced_only_with_force(site: Path) -> None:
    before = snapshot(site)
    assert pki("broker", site, "localhost").returncode == 73
    assert snapshot(site) == before
    result = pki("broker", site, "broker.site.lan", "--force")
    assert result.returncode == 0, result.stderr
    assert matches(site, "broker") and valid(site, "broker")
    text = openssl("x509", "-in", site / "broker.crt", "-noout", "-ext", "subjectAltName").stdout
    assert "DNS:broker.site.lan" in text


@pytest.mark.parametrize("name", ["ca", "broker", "crl", "fleet", "CA", "Broker", "FLEET"])
def test_the_sites_own_names_are_refused(site: Path, name: str) -> None:
    before = snapshot(site)
    for args in (("client", site, name), ("client", site, name, "--force")):
        result = pki(*args)
        assert result.returncode == 64 and "reserved" in result.stderr
    assert snapshot(site) == before
    # The CA still issues and revokes.
    assert pki("client", site, "dev-c").returncode == 0 and matches(site, "dev-c")
    assert pki("revoke", site, "dev-c").returncode == 0 and not valid(site, "dev-c")


def test_a_failed_signing_leaves_no_key_behind(site: Path) -> None:
    (site / "serial").write_text("not a serial\n")  # a damaged CA: openssl cannot sign
    before = snapshot(site)
    result = pki("client", site, "dev-x")
    assert result.returncode != 0
    assert "signing dev-x's certificate failed" in result.stderr
    assert snapshot(site) == before  # no dev-x.key without a certificate, no temporary files


def test_a_name_the_ca_has_issued_is_refused_even_when_its_files_are_gone(site: Path) -> None:
    """The operator copied dev-a's files to its SD card and deleted them: a new dev-a is still a
    replacement, and the old certificate must be revoked, not left valid beside the new one."""
    old = site / "old-dev-a.crt"
    (site / "dev-a.crt").rename(old)
    (site / "dev-a.key").unlink()
    before = snapshot(site)
    result = pki("client", site, "dev-a")
    assert result.returncode == 73 and "--force" in result.stderr
    assert snapshot(site) == before
    assert pki("client", site, "dev-a", "--force").returncode == 0
    assert matches(site, "dev-a") and valid(site, "dev-a") and not valid(site, "old-dev-a")
