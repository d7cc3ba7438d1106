"""Staged rollouts: which devices take a release at a given percent.

A device is in a release's cohort when hash(device_id, release) mod 100 < percent. The hash is stable,
so raising the percent from 10 to 50 keeps the first 10% and adds more; and it mixes in the release, so
the same 10% of the fleet do not always go first.
"""

from __future__ import annotations

import hashlib


def bucket(device_id: str, release_key: str) -> int:
    digest = hashlib.sha256(f"{device_id}\x00{release_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def in_cohort(device_id: str, release_key: str, percent: int) -> bool:
    return bucket(device_id, release_key) < percent
