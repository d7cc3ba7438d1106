"""Model slots: `current` and `previous` for each kind, swapped atomically.

Layout under `<state_dir>/ota/slots/<kind>/`:
- `<version>/`: a staged release: its model file(s) and `manifest.json` (the manifest entry);
- `current` -> `<version>`: what the daemon loads; absent means the bundled model from the firmware;
- `previous` -> `<version>`: what a rollback returns to; absent means the bundled model.

Each change is a new symlink renamed over the old one (rename(2) is atomic) followed by an fsync of the
directory, so a power cut leaves either the old link or the new one, never a missing or half-written one.
`previous` is moved before `current`: a cut between the two leaves both pointing at valid releases.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from device.errors import ModelError
from device.ota.release import ReleaseInfo
from device.vision.manifest import Manifest, ModelEntry

ENTRY_FILE = "manifest.json"
BUNDLED = "bundled"


class Slots:
    def __init__(self, root: Path) -> None:
        self.root = root

    def kind_dir(self, kind: str) -> Path:
        return self.root / kind

    def current(self, kind: str) -> str | None:
        return self._read(kind, "current")

    def previous(self, kind: str) -> str | None:
        return self._read(kind, "previous")

    def _read(self, kind: str, link: str) -> str | None:
        try:
            return os.readlink(self.kind_dir(kind) / link)
        except FileNotFoundError:
            return None

    def stage(self, kind: str, version: str, staged: Path) -> Path:
        """Move a fully verified release directory into place (same filesystem: a rename)."""
        target = self.kind_dir(kind) / version
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)  # a leftover from an interrupted attempt; never the running one
        _fsync_tree(staged)
        os.replace(staged, target)
        _fsync_dir(target.parent)
        return target

    def activate(self, kind: str, version: str) -> None:
        """current -> version, previous -> what current was."""
        if not (self.kind_dir(kind) / version / ENTRY_FILE).is_file():
            raise ModelError(f"{kind} release {version} is not staged; cannot activate it")
        old = self.current(kind)
        if old == version:
            return
        self._link(kind, "previous", old)
        self._link(kind, "current", version)

    def rollback(self, kind: str) -> tuple[str | None, str | None]:
        """current -> previous; returns (from, to). None means the bundled model."""
        old, back = self.current(kind), self.previous(kind)
        self._link(kind, "current", back)
        self._link(kind, "previous", None)
        return old, back

    def _link(self, kind: str, name: str, version: str | None) -> None:
        directory = self.kind_dir(kind)
        directory.mkdir(parents=True, exist_ok=True)
        if version is None:
            (directory / name).unlink(missing_ok=True)
        else:
            temporary = directory / f".{name}.new"
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(version)
            os.replace(temporary, directory / name)
        _fsync_dir(directory)

    def manifest(self, kind: str, version: str) -> tuple[Manifest, ModelEntry]:
        """The one-entry manifest of a staged release, with its files resolved."""
        path = self.kind_dir(kind) / version / ENTRY_FILE
        return read_manifest(path)

    def prune(self, kind: str) -> None:
        """Delete every staged release that is neither current nor previous."""
        keep = {self.current(kind), self.previous(kind)}
        directory = self.kind_dir(kind)
        if not directory.is_dir():
            return
        for child in directory.iterdir():
            if child.is_dir() and not child.is_symlink() and child.name not in keep:
                shutil.rmtree(child, ignore_errors=True)


def write_manifest(directory: Path, entries: list[ModelEntry]) -> None:
    """The release's manifest entry first, then its CPU twin's, with file names relative to the slot."""
    data = []
    for entry in entries:
        one = entry.model_dump(mode="json")
        one["file"] = Path(entry.file).name
        one["labels"] = None if entry.labels is None else Path(entry.labels).name
        data.append(one)
    (directory / ENTRY_FILE).write_text(json.dumps({"model": data}, indent=1))


def read_manifest(path: Path) -> tuple[Manifest, ModelEntry]:
    """The slot's manifest (files resolved against the slot) and the release's own entry."""
    try:
        raw = json.loads(path.read_bytes())
        entries = [ModelEntry.model_validate(one) for one in raw["model"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"release manifest {path} is unreadable: {exc}") from None
    root = path.parent
    resolved = tuple(
        e.model_copy(update={"file": root / e.file, "labels": None if e.labels is None else root / e.labels})
        for e in entries
    )
    return Manifest(path, resolved), resolved[0]


def entries_for(release: ReleaseInfo, local: dict[str, Path]) -> list[ModelEntry]:
    """Manifest entries for the staged files: the release itself, then its CPU twin if it has one."""
    spec = release.spec
    common = {
        "version": release.version,
        "kind": release.kind,
        "adapter": spec.adapter,
        "resize": spec.resize,
        "input": spec.input,
        "outputs": spec.outputs,
        "source": spec.source,
        "licence": spec.licence,
        "description": spec.description,
        "labels": local.get("labels"),
        # None (an older release): the entry takes it from the input, as a manifest entry does.
        **({} if spec.quantization is None else {"quantization": spec.quantization}),
    }
    twin_id = f"{release.model_id}-cpu-twin" if "cpu_twin" in local else None
    entries = [
        ModelEntry(
            id=release.model_id,
            file=local["model"],
            sha256=_sha256(local["model"]),
            cpu_twin=twin_id,
            **common,
        )
    ]
    if twin_id is not None:
        entries.append(
            ModelEntry(id=twin_id, file=local["cpu_twin"], sha256=_sha256(local["cpu_twin"]), **common)
        )
    return entries


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(directory: Path) -> None:
    for child in directory.iterdir():
        if child.is_file():
            with child.open("rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(directory)
