"""A TUF repository on disk, written with python-tuf's Metadata API.

Layout (served as is by any static HTTP server):
- `metadata/N.root.json`, `N.targets.json`, `N.snapshot.json`, `timestamp.json` (consistent snapshots:
  a client never mixes files from two publications);
- `targets/<dir>/<sha256>.<name>`: each target under its hash, so a file is never replaced in place.
Each publication bumps targets, snapshot and timestamp, re-signing them with their role's key.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from device.errors import ConfigError
from device.ota.index import INDEX
from device.ota.release import check_target_path

from . import keys

EXPIRY = {
    "root": timedelta(days=365),
    "targets": timedelta(days=90),
    "snapshot": timedelta(days=7),
    "timestamp": timedelta(days=1),
}


def _expires(role: str, override: timedelta | None = None) -> datetime:
    return (datetime.now(UTC) + (override if override is not None else EXPIRY[role])).replace(microsecond=0)


class Repository:
    def __init__(self, path: Path, key_dir: Path) -> None:
        self.path = path
        self.metadata_dir = path / "metadata"
        self.targets_dir = path / "targets"
        self.key_dir = key_dir

    # -- creating -----------------------------------------------------------------------------
    def init(self) -> Path:
        """Keys for every role (kept if present), root v1, and an empty first publication. Returns the
        root.json to install on devices (ota.trusted_root)."""
        if (self.metadata_dir / "1.root.json").exists():
            raise ConfigError(f"{self.path} already holds a repository")
        signers = {
            role: keys.load(self.key_dir / f"{role}.pem")
            if (self.key_dir / f"{role}.pem").exists()
            else keys.generate(self.key_dir / f"{role}.pem")
            for role in keys.ROLES
        }
        root = Metadata(Root(expires=_expires("root"), consistent_snapshot=True))
        for role, signer in signers.items():
            root.signed.add_key(signer.public_key, role)
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self._write(root, "root")
        targets = Metadata(Targets(expires=_expires("targets")))
        self._set_index(targets.signed, [])
        self.publish(targets, bump=False)
        shutil.copyfile(self.metadata_dir / "1.root.json", self.path / "root.json")
        return self.path / "root.json"

    # -- reading ------------------------------------------------------------------------------
    def _latest(self, role: str) -> Path:
        if role == "timestamp":
            return self.metadata_dir / "timestamp.json"
        versions = [int(p.name.split(".")[0]) for p in self.metadata_dir.glob(f"*.{role}.json")]
        if not versions:
            raise ConfigError(f"{self.metadata_dir} has no {role} metadata; run `appliance-release init`")
        return self.metadata_dir / f"{max(versions)}.{role}.json"

    def root(self) -> Metadata[Root]:
        return Metadata[Root].from_file(str(self._latest("root")))

    def targets(self) -> Metadata[Targets]:
        return Metadata[Targets].from_file(str(self._latest("targets")))

    def releases(self) -> dict[str, TargetFile]:
        return {
            path: t
            for path, t in self.targets().signed.targets.items()
            if "appliance" in t.unrecognized_fields.get("custom", {})
        }

    # -- writing ------------------------------------------------------------------------------
    def add_file(
        self, targets: Targets, target_path: str, local: Path, custom: dict[str, Any] | None = None
    ) -> TargetFile:
        """Copy `local` in under its hash and list it in `targets`."""
        return self.add_data(targets, target_path, local.read_bytes(), custom)

    def add_data(
        self, targets: Targets, target_path: str, data: bytes, custom: dict[str, Any] | None = None
    ) -> TargetFile:
        """Write `data` in under its hash and list it in `targets`."""
        check_target_path(target_path)
        target = TargetFile.from_data(target_path, data, ["sha256"])
        if custom is not None:
            target.unrecognized_fields["custom"] = custom
        directory, _, name = target_path.rpartition("/")
        destination = self.targets_dir / directory / f"{target.hashes['sha256']}.{name}"
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(data)
        targets.targets[target_path] = target
        return target

    def _set_index(self, targets: Targets, releases: list[str]) -> None:
        self.add_data(targets, INDEX, json.dumps({"releases": sorted(releases)}, indent=1).encode())

    def publish(
        self, targets: Metadata[Targets], bump: bool = True, expires: dict[str, timedelta] | None = None
    ) -> None:
        """Re-sign targets (with its index of releases), then a new snapshot and timestamp."""
        expires = expires or {}
        releases = [
            p
            for p, t in targets.signed.targets.items()
            if "appliance" in t.unrecognized_fields.get("custom", {})
        ]
        self._set_index(targets.signed, releases)
        if bump:
            targets.signed.version += 1
        targets.signed.expires = _expires("targets", expires.get("targets"))
        self._write(targets, "targets")
        snapshot = self._next(Snapshot, "snapshot")
        snapshot.signed.meta["targets.json"] = MetaFile(version=targets.signed.version)
        snapshot.signed.expires = _expires("snapshot", expires.get("snapshot"))
        self._write(snapshot, "snapshot")
        timestamp = self._next(Timestamp, "timestamp")
        timestamp.signed.snapshot_meta = MetaFile(version=snapshot.signed.version)
        timestamp.signed.expires = _expires("timestamp", expires.get("timestamp"))
        self._write(timestamp, "timestamp")

    def _next(self, kind: type[Snapshot] | type[Timestamp], role: str) -> Metadata[Any]:
        try:
            path = self._latest(role)
        except ConfigError:
            return Metadata(kind())
        if not path.exists():
            return Metadata(kind())
        current: Metadata[Any] = Metadata.from_file(str(path))
        current.signed.version += 1
        return current

    def _write(self, metadata: Metadata[Any], role: str) -> None:
        metadata.signatures.clear()
        for signer in self._signers(role):
            metadata.sign(signer, append=True)
        name = "timestamp.json" if role == "timestamp" else f"{metadata.signed.version}.{role}.json"
        metadata.to_file(str(self.metadata_dir / name), JSONSerializer(compact=False))

    def _signers(self, role: str) -> list[Any]:
        return [keys.load(self.key_dir / f"{role}.pem")]

    # -- keys ---------------------------------------------------------------------------------
    def rotate(self, role: str) -> int:
        """A new key for `role`; a new root version names it, signed by the old and the new root keys
        (clients accept a new root only if both its old and its new threshold signed it)."""
        if role not in keys.ROLES:
            raise ConfigError(f"role must be one of {', '.join(keys.ROLES)}")
        root = self.root()
        old_path = self.key_dir / f"{role}.pem"
        retired = self.key_dir / f"{role}.old.pem"
        retired.unlink(missing_ok=True)
        old_path.rename(retired)
        new = keys.generate(old_path)
        for keyid in list(root.signed.roles[role].keyids):
            root.signed.revoke_key(keyid, role)
        root.signed.add_key(new.public_key, role)
        root.signed.version += 1
        root.signed.expires = _expires("root")
        root.signatures.clear()
        signers = [keys.load(self.key_dir / "root.pem")] + ([keys.load(retired)] if role == "root" else [])
        for signer in signers:
            root.sign(signer, append=True)
        root.to_file(
            str(self.metadata_dir / f"{root.signed.version}.root.json"), JSONSerializer(compact=False)
        )
        # Kept, not deleted, for the operator to archive offline (or destroy, if it leaked).
        retired.rename(self.key_dir / f"{role}.retired-v{root.signed.version - 1}.pem")
        self.publish(self.targets())  # re-sign everything under the new key
        return root.signed.version
