"""Consumer deduplication on (device_id, seq)."""

from __future__ import annotations

import random

from device.dedupe import Deduplicator


def test_repeats_are_dropped_per_device() -> None:
    dedupe = Deduplicator()
    assert [dedupe.is_new("a", s) for s in (1, 2, 2, 3, 1)] == [True, True, False, True, False]
    assert dedupe.is_new("b", 1) and not dedupe.is_new("b", 1)
    assert dedupe.duplicates == 3


def test_live_first_interleaving_and_resends() -> None:
    """Live messages 11..15 arrive before the backlog 1..10, then the in-flight window is resent."""
    dedupe = Deduplicator()
    order = [11, 12, 13, 14, 15, *range(1, 11), 8, 9, 10, 14, 15]
    kept = [s for s in order if dedupe.is_new("dev", s)]
    assert sorted(kept) == list(range(1, 16)) and len(kept) == 15
    assert dedupe.missing("dev") == []


def test_gaps_are_reported_until_filled() -> None:
    dedupe = Deduplicator()
    for seq in (1, 2, 5, 6):
        dedupe.is_new("dev", seq)
    assert dedupe.missing("dev") == [3, 4]
    dedupe.is_new("dev", 3)
    assert dedupe.missing("dev") == [4]


def test_memory_stays_bounded() -> None:
    dedupe = Deduplicator(window=1000, max_devices=5)
    rng = random.Random(1)
    for seq in range(1, 50_000):
        if rng.random() > 0.01:  # a few never arrive: they must not pin memory
            dedupe.is_new("dev", seq)
    state = dedupe._devices["dev"]
    assert len(state.seen) <= 1000
    assert not dedupe.is_new("dev", 10)  # far below the window counts as seen
    for device in range(10):
        dedupe.is_new(f"d{device}", 1)
    assert len(dedupe._devices) == 5
