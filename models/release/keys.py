"""The signing keys: one ed25519 key per TUF role, as PKCS#8 PEM files in a keys folder.

Set APPLIANCE_RELEASE_PASSPHRASE to encrypt new keys and to open encrypted ones. The root key belongs
offline (docs/ota.md); the tool only needs it to create the repository and to rotate keys.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner

from device.errors import ConfigError

ROLES = ("root", "targets", "snapshot", "timestamp")
PASSPHRASE_ENV = "APPLIANCE_RELEASE_PASSPHRASE"


def _passphrase() -> bytes | None:
    value = os.environ.get(PASSPHRASE_ENV)
    return value.encode() if value else None


def generate(path: Path) -> CryptoSigner:
    """A new key at `path` (0600, never overwriting one)."""
    if path.exists():
        raise ConfigError(f"key {path} already exists; refusing to overwrite a signing key")
    key = Ed25519PrivateKey.generate()
    secret = _passphrase()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(secret) if secret else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return CryptoSigner(key)


def load(path: Path) -> CryptoSigner:
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"signing key {path} does not exist (create keys with `appliance-release init`)"
        ) from None
    try:
        key = serialization.load_pem_private_key(pem, _passphrase())
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"signing key {path} cannot be opened ({exc}); is {PASSPHRASE_ENV} right?"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"signing key {path} is not an ed25519 key")
    return CryptoSigner(key)
