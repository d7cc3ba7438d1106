"""Per output file: identity against models/, else the behaviour check."""

from __future__ import annotations

import argparse

from .checks import MODEL_CHECKS
from .paths import MODELS_DIR
from .sources import sha256_file


def verify(filename: str, args: argparse.Namespace) -> bool:
    """Print identity against models/, else run the behaviour check."""
    built, committed = args.out / filename, MODELS_DIR / filename
    digest = sha256_file(built)
    if committed.exists() and sha256_file(committed) == digest:
        print(f"  IDENTICAL  {filename}  sha256 {digest[:16]}")
        if not (args.check_all and filename in MODEL_CHECKS):
            return True
    else:
        print(f"  DIFFERS    {filename}  sha256 {digest[:16]}")
    check_fn = MODEL_CHECKS.get(filename)
    if check_fn is None or not committed.exists():
        reason = (
            "no behaviour check for this file" if check_fn is None else "nothing committed to compare with"
        )
        print(f"    FAIL: {reason}")
        return False
    result = check_fn(built, committed, args.images)
    for note in result.notes:
        print(f"    ok   {note}")
    for failure in result.failures:
        print(f"    FAIL {failure}")
    return not result.failures
