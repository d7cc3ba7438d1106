"""Consumer deduplication on (device_id, seq)."""

from __future__ import annotations

import random
import sys
from types import FrameType
from typing import TYPE_CHECKING, Any

import device.dedupe as dedupe_module
from device.dedupe import Deduplicator

if TYPE_CHECKING:
    from _typeshed import TraceFunction


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
    dedupe = Deduplicator(max_ranges=32, max_devices=5)
    rng = random.Random(1)
    lost = []
    for seq in range(1, 50_000):
        if rng.random() > 0.01:  # a few never arrive: they must not pin memory
            dedupe.is_new("dev", seq)
        else:
            lost.append(seq)
    assert dedupe.ranges("dev") <= 32 and len(lost) > 32
    # Past the cap, old ranges are forgotten, never joined: a lost seq that turns up late is still new.
    assert dedupe.is_new("dev", lost[0]) and dedupe.is_new("dev", lost[-1])
    assert not dedupe.is_new("dev", 49_999)  # the live range is remembered
    for device in range(10):
        dedupe.is_new(f"d{device}", 1)
    assert len(dedupe._devices) == 5


def test_a_huge_seq_does_not_silence_the_device() -> None:
    """One message with seq 2^64-1 used to move the low-water mark above every later seq."""
    dedupe = Deduplicator()
    assert dedupe.is_new("dev", 2**64 - 1)
    assert [dedupe.is_new("dev", s) for s in range(1, 6)] == [True] * 5
    assert not dedupe.is_new("dev", 2**64 - 1) and dedupe.duplicates == 1


def test_a_device_whose_state_was_wiped_is_heard_again_under_its_new_epoch() -> None:
    dedupe = Deduplicator()
    assert all(dedupe.is_new("dev", s, "0badc0de00000001") for s in range(1, 101))
    assert not dedupe.is_new("dev", 1, "0badc0de00000001")  # a repeat in the old epoch
    # Wiped: numbering starts again at 1 under a new epoch; every message is new, and counted as a reset.
    assert all(dedupe.is_new("dev", s, "5eed000000000002") for s in range(1, 51))
    assert dedupe.resets == 1 and dedupe.ranges("dev", "5eed000000000002") == 1
    # A late resend from before the wipe is still a repeat: the previous epoch's window is kept.
    assert not dedupe.is_new("dev", 100, "0badc0de00000001")
    assert dedupe.duplicates == 2


def _lines_run(dedupe: Deduplicator, device: str, seq: int) -> int:
    """How many lines of device/dedupe.py one is_new runs: a count of the work, where a clock would
    measure the machine's load. (Every other step is a list operation on at most the cap's ranges.)"""
    lines = 0

    def local(frame: FrameType, event: str, _arg: Any) -> TraceFunction:
        nonlocal lines
        lines += event == "line"
        return local

    def on_call(frame: FrameType, _event: str, _arg: Any) -> TraceFunction | None:
        return local if frame.f_code.co_filename == dedupe_module.__file__ else None

    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        dedupe.is_new(device, seq)
    finally:
        sys.settrace(previous)
    return lines


def test_scattered_seqs_cost_bounded_state_and_work_per_message() -> None:
    """25,000 sparse seqs from one device: the ranges held never exceed the cap after any message, and
    the lines run per message stay under a constant that does not grow with the device's history (no
    rebuild of a window per message, which the first version did)."""
    dedupe = Deduplicator(max_ranges=32)
    rng = random.Random(7)
    work = []
    for _ in range(25_000):
        work.append(_lines_run(dedupe, "attacker", rng.randrange(1, 2**64)))
        assert dedupe.ranges("attacker") <= 32
    assert dedupe.forgotten > 0  # ranges were forgotten at the cap, and counted
    assert max(work) <= 40 and max(work[-1000:]) <= max(work[:1000])
    in_order = [_lines_run(dedupe, "honest", s) for s in range(1, 1001)]
    # The usual message, the live range's next number, takes the short path (14 lines today; the first
    # two messages make the range).
    assert max(in_order[2:]) <= 16
    # Another device in order is untouched: every message new, one range.
    assert all(not dedupe.is_new("honest", s) for s in range(1, 1001))
    assert dedupe.ranges("honest") == 1 and dedupe.missing("honest") == []


def test_missing_is_capped_even_across_a_huge_gap() -> None:
    dedupe = Deduplicator()
    for seq in (1, 2, 2**63):
        dedupe.is_new("dev", seq)
    gap = dedupe.missing("dev", limit=10)
    assert gap == list(range(3, 13))


def test_ranges_join_and_split_correctly_against_a_set() -> None:
    """Random order with repeats, checked against a plain set (no cap reached)."""
    rng = random.Random(3)
    dedupe = Deduplicator(max_ranges=10_000)
    seen: set[int] = set()
    for _ in range(20_000):
        seq = rng.randrange(1, 3000)
        assert dedupe.is_new("dev", seq) == (seq not in seen)
        seen.add(seq)
    assert dedupe.missing("dev", limit=10_000) == [s for s in range(min(seen), max(seen)) if s not in seen]


def test_scattered_high_seqs_never_swallow_the_next_seq_of_the_live_range() -> None:
    """1..100, then 40 scattered seqs >= 1e6 (more than the cap): seq 101 used to be dropped as a repeat,
    and every later in-order seq with it, because the live range was joined to a huge one at the cap."""
    dedupe = Deduplicator(max_ranges=32)
    assert all(dedupe.is_new("dev", s) for s in range(1, 101))
    rng = random.Random(11)
    for _ in range(40):
        dedupe.is_new("dev", rng.randrange(10**6, 2**64))
    assert dedupe.is_new("dev", 101)
    assert not dedupe.is_new("dev", 100)  # the live range is never forgotten
    assert all(dedupe.is_new("dev", s) for s in range(102, 1001))
    assert dedupe.ranges("dev") <= 32


def test_no_unseen_seq_is_ever_dropped_whatever_the_pattern() -> None:
    """An adversarial mix against a plain set, far past the cap: in-order seqs, seqs planted just above
    and below the live range, far scattered ones, and replays. A False answer must always be a seq that
    was offered before (forgetting may only let a repeat through twice, the safe direction), the last
    seq offered is always still a repeat, and the state never exceeds the cap."""
    rng = random.Random(5)
    dedupe = Deduplicator(max_ranges=8)
    offered: set[int] = set()
    live = 1
    for _ in range(20_000):
        kind = rng.random()
        if kind < 0.4:
            seq = live = live + 1
        elif kind < 0.6:
            seq = live + rng.randrange(2, 40)  # planted just above the live range
        elif kind < 0.7:
            seq = max(1, live - rng.randrange(2, 40))  # below it: a backlog, or an old resend
        elif kind < 0.9:
            seq = rng.randrange(1, 2**64)
        else:
            seq = rng.choice((live, live - 1, 2**64 - 1))
        new = dedupe.is_new("dev", seq)
        assert new or seq in offered, f"unseen seq {seq} dropped as a repeat"
        offered.add(seq)
        assert not dedupe.is_new("dev", seq)  # what was just offered is remembered
        assert dedupe.ranges("dev") <= 8
