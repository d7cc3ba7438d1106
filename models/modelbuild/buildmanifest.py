"""The manifest of one build: every model build.py wrote, committed or build-only, with the sha256
and size of the files in the build directory.

models/manifest.toml lists the committed files with their committed hashes. A rebuilt file may
differ (the int8 SSD does, see README) and the build-only variants are not in models/ at all, so
the build directory gets its own manifest: point `appliance models eval/report` at it with
APPLIANCE_MODELS__MANIFEST=build/models/manifest.toml to see every variant side by side.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from .paths import MODELS_DIR
from .sources import sha256_file

BUILD_ONLY = MODELS_DIR / "manifest-build-only.toml"
_HEADER = (
    "# The manifest of one `make models` build, written by models/build.py: the committed models and\n"
    "# the build-only variants (models/manifest-build-only.toml), hashed as built here.\n"
    "schema = 1\n"
)


def _blocks(text: str) -> list[str]:
    """The [[model]] tables of a manifest, as text (comments inside them kept)."""
    return ["[[model]]\n" + part.strip() + "\n" for part in text.split("[[model]]\n")[1:]]


def _rehash(block: str, out: Path) -> str | None:
    """The block with the built file's sha256 and size; None if this build did not write it."""
    match = re.search(r'^file = "([^"]+)"$', block, flags=re.M)
    if match is None:
        return None
    built = out / match.group(1)
    if not built.is_file():
        return None
    block = re.sub(r'^sha256 = "[0-9a-f]*"$', f'sha256 = "{sha256_file(built)}"', block, flags=re.M)
    return re.sub(r"^size = \d+$", f"size = {built.stat().st_size}", block, flags=re.M)


def write_build_manifest(out: Path) -> Path:
    """Write out/manifest.toml; returns its path. Checked to parse as TOML before it is written."""
    blocks = _blocks((MODELS_DIR / "manifest.toml").read_text()) + _blocks(BUILD_ONLY.read_text())
    kept = [b for b in (_rehash(block, out) for block in blocks) if b is not None]
    text = _HEADER + "".join("\n" + block for block in kept)
    tomllib.loads(text)  # a malformed manifest fails here, at build time, not in the report
    target = out / "manifest.toml"
    target.write_text(text)
    return target
