#!/usr/bin/env bash
# Regenerates deploy/image/requirements.txt: resolves `pip install .` (pyproject.toml's dependencies)
# from wheels only, for CPython 3.11 on aarch64 and on x86_64 as Debian 12 has them (glibc 2.36), and
# pins every package to the version resolved, with the sha256 of each architecture's wheel.
# Both architectures must resolve to the same versions; run it after changing a dependency, then
# `make test` (tests/test_image.py) and `make image`.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
SRC="$(cd "$HERE/../.." && pwd)"
PYTHON=${PYTHON:-$SRC/.venv/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for pyarch in aarch64 x86_64; do
    platforms=(--platform "manylinux2014_$pyarch")
    for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_$pyarch"); done
    "$PYTHON" -m pip install --quiet --dry-run --ignore-installed --only-binary=:all: --python-version 3.11 \
        --implementation cp --abi cp311 "${platforms[@]}" --target "$tmp/target" \
        --report "$tmp/$pyarch.json" "$SRC"
done

"$PYTHON" - "$tmp" "$HERE/requirements.txt" <<'PY'
import json
import re
import sys
from pathlib import Path

tmp, out = Path(sys.argv[1]), Path(sys.argv[2])
pins: dict[str, dict[str, set[str]]] = {}
for arch in ("aarch64", "x86_64"):
    for item in json.loads((tmp / f"{arch}.json").read_text())["install"]:
        name = re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower()
        if name == "appliance":
            continue
        version = item["metadata"]["version"]
        pins.setdefault(name, {}).setdefault(version, set()).add(
            item["download_info"]["archive_info"]["hashes"]["sha256"]
        )
split = {name: sorted(versions) for name, versions in pins.items() if len(versions) > 1}
if split:
    sys.exit(f"lock: the two architectures resolved to different versions: {split}; pin them in pyproject.toml")
header = [line for line in out.read_text().splitlines() if line.startswith("#")]
body = []
for name, versions in sorted(pins.items()):
    ((version, hashes),) = versions.items()
    body.append(f"{name}=={version} \\\n" + " \\\n".join(f"    --hash=sha256:{h}" for h in sorted(hashes)))
out.write_text("\n".join(header + body) + "\n")
print(f"lock: {len(body)} packages pinned in {out}")
PY
