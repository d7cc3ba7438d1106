"""The outbox on real SQLite files: seq, persistence, bounds, expiry, corruption, a full disk."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from device.clock import FakeClock
from device.config import OutboxConfig
from device.link.outbox import Outbox
from device.link.sequence import SeqFloor
from device.wire import ObjectMessage, decode

from .conftest import DATA


def message(track: int = 1) -> ObjectMessage:
    return decode((DATA / "wire" / "full_1280.bin").read_bytes()).__class__(
        **{**decode((DATA / "wire" / "full_1280.bin").read_bytes()).__dict__, "seq": 0, "track_id": track}
    )


def outbox(path: Path, clock: FakeClock | None = None, **settings: object) -> Outbox:
    return Outbox(path / "outbox.sqlite", OutboxConfig.model_validate(settings), clock or FakeClock())


def test_seq_is_assigned_on_store_and_survives_reopening(tmp_path: Path) -> None:
    box = outbox(tmp_path)
    stored = [box.add(message(i)) for i in range(5)]
    assert [m.seq for m in stored if m] == [1, 2, 3, 4, 5]
    box.ack(2)
    box.close()
    again = outbox(tmp_path)
    assert [p.seq for p in again.pending(0, 100)] == [1, 3, 4, 5]
    assert decode(again.pending(0, 1)[0].payload).seq == 1
    nxt = again.add(message())
    assert nxt is not None and nxt.seq == 6  # never reused, even for acknowledged numbers
    assert again.stats().depth == 5


def test_pending_is_oldest_first_after_a_cursor(tmp_path: Path) -> None:
    box = outbox(tmp_path)
    for i in range(10):
        box.add(message(i))
    assert [p.seq for p in box.pending(4, 3)] == [5, 6, 7]
    assert box.newest_seq() == 10


def test_drop_oldest_when_full(tmp_path: Path) -> None:
    box = outbox(tmp_path, max_bytes=64 * 1024)  # room for 47 messages of 1,381 bytes
    for i in range(60):
        assert box.add(message(i)) is not None
    stats = box.stats()
    assert stats.bytes <= 64 * 1024
    assert stats.drops == {"oldest_evicted": 60 - stats.depth}
    assert box.pending(0, 1)[0].seq == 60 - stats.depth + 1


def test_reject_new_when_full(tmp_path: Path) -> None:
    box = outbox(tmp_path, max_bytes=64 * 1024, when_full="reject_new")
    results = [box.add(message(i)) for i in range(60)]
    kept = [r for r in results if r is not None]
    assert results[-1] is None and box.stats().drops == {"full": 60 - len(kept)}
    assert [p.seq for p in box.pending(0, 100)] == [m.seq for m in kept] == list(range(1, len(kept) + 1))


def test_messages_older_than_the_ttl_expire(tmp_path: Path) -> None:
    clock = FakeClock()
    box = outbox(tmp_path, clock, max_age_s=60)
    box.add(message())
    clock.advance(30)
    box.add(message())
    assert box.stats().oldest_age_s == 30.0
    clock.advance(45)
    assert box.expire() == 1
    assert [p.seq for p in box.pending(0, 10)] == [2]
    assert box.stats().drops == {"expired": 1}


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_file_is_quarantined_and_numbering_goes_on(tmp_path: Path, damage: str) -> None:
    box = outbox(tmp_path)
    for i in range(30):
        box.add(message(i))
    box.close()
    path = tmp_path / "outbox.sqlite"
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    if damage == "garbage":
        path.write_bytes(os.urandom(path.stat().st_size))
    else:
        with path.open("r+b") as handle:
            handle.truncate(path.stat().st_size // 3)
    fresh = outbox(tmp_path)
    stats = fresh.stats()
    assert stats.depth == 0 and len(stats.quarantined) == 1
    assert Path(stats.quarantined[0]).exists()
    assert "moved to" in str(stats.last_error)
    nxt = fresh.add(message())
    assert nxt is not None and nxt.seq > 30  # above the floor: never a repeat


def test_corruption_while_running_is_recovered(tmp_path: Path) -> None:
    box = outbox(tmp_path)
    for i in range(5):
        box.add(message(i))
    path = tmp_path / "outbox.sqlite"
    box._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    with path.open("r+b") as handle:  # another process scribbles over the file
        handle.seek(0)
        handle.write(b"\x00garbage" * 512)
    box._db.execute("PRAGMA shrink_memory")  # drop the page cache, as memory pressure would
    stored = None
    for i in range(3):
        stored = box.add(message(i)) or stored
    assert stored is not None and stored.seq > 5
    assert box.stats().quarantined and box.stats().drops.get("corrupt", 0) >= 1


def test_synchronous_full_works(tmp_path: Path) -> None:
    box = outbox(tmp_path, synchronous="FULL")
    assert box.add(message()) is not None
    assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert box._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_full_disk_loses_messages_counted_never_the_process(small_disk: Path) -> None:
    ballast = small_disk / "journal.log"  # something else on the same disk, e.g. a runaway log
    ballast.write_bytes(b"x" * 400_000)
    box = outbox(small_disk, max_bytes=64 * 2**20)
    results = [box.add(message(i)) for i in range(1000)]  # 1.4 MB into what is left of 1 MiB
    stored = [r for r in results if r is not None]
    drops = box.stats().drops
    assert stored and drops.get("disk_full", 0) == 1000 - len(stored) > 0
    assert "disk is full" in str(box.stats().last_error)
    ballast.unlink()  # space comes back...
    later = box.add(message())
    assert later is not None and later.seq == stored[-1].seq + 1  # ...and numbering continues, no gap
    db = sqlite3.connect(small_disk / "outbox.sqlite")
    assert db.execute("PRAGMA quick_check").fetchone()[0] == "ok"  # never corrupted


def test_the_sequence_epoch_is_kept_across_restarts_and_new_when_the_state_is_wiped(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite.seq-floor"
    first = SeqFloor(path)
    assert len(first.epoch) == 16 and path.read_text().split() == ["1", first.epoch]  # written at once
    first.allow(1)
    assert SeqFloor(path).epoch == first.epoch and SeqFloor(path).reserved == first.reserved
    path.unlink()  # a wiped state folder: numbering starts again at 1, under a new epoch
    again = SeqFloor(path)
    assert again.reserved == 1 and again.epoch != first.epoch


def test_an_older_floor_file_gets_an_epoch_and_keeps_its_ceiling(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite.seq-floor"
    path.write_text("5001\n")
    floor = SeqFloor(path)
    assert floor.reserved == 5001 and path.read_text().split() == ["5001", floor.epoch]
    assert SeqFloor(path).epoch == floor.epoch


def test_a_frames_batch_gets_consecutive_seqs_in_order_and_survives_reopening(tmp_path: Path) -> None:
    box = outbox(tmp_path)
    first = box.add(message(0))
    batch = box.add_many([message(1), message(2), message(3)])
    after = box.add(message(4))
    assert first is not None and after is not None
    seqs = [first.seq] + [m.seq for m in batch if m is not None] + [after.seq]
    assert seqs == list(range(first.seq, first.seq + 5))  # gap-free, in the frame's order
    assert [m.track_id for m in batch if m is not None] == [1, 2, 3]
    box.close()
    reopened = outbox(tmp_path)
    stored = reopened.pending(0, 100)
    assert [p.seq for p in stored] == seqs and reopened.stats().depth == 5


def test_a_batch_on_a_full_disk_is_all_or_nothing_and_spends_no_seq(small_disk: Path) -> None:
    ballast = small_disk / "journal.log"
    ballast.write_bytes(b"x" * 400_000)
    box = outbox(small_disk, max_bytes=64 * 2**20)
    outcomes = [box.add_many([message(3 * i + k) for k in range(3)]) for i in range(300)]
    stored = [m for batch in outcomes for m in batch if m is not None]
    partial = [batch for batch in outcomes if any(batch) and not all(batch)]
    assert stored and not partial  # a batch is stored whole or not at all
    assert box.stats().drops.get("disk_full", 0) == 900 - len(stored) > 0
    on_disk = [p.seq for p in box.pending(0, 10_000)]
    assert on_disk == [m.seq for m in stored] == list(range(stored[0].seq, stored[0].seq + len(stored)))
    ballast.unlink()
    later = box.add_many([message(), message()])
    assert [m.seq for m in later if m is not None] == [stored[-1].seq + 1, stored[-1].seq + 2]
    db = sqlite3.connect(small_disk / "outbox.sqlite")
    assert db.execute("PRAGMA quick_check").fetchone()[0] == "ok"


def test_inserts_leave_the_checkpoint_to_the_other_threads(tmp_path: Path) -> None:
    box = outbox(tmp_path)
    db_file = tmp_path / "outbox.sqlite"
    for i in range(3000):  # about 4 MB: past SQLite's default checkpoint of 1000 pages, several times
        box.add(message(i))
    # Nothing was copied into the database file inside a frame's insert: it all still sits in the WAL.
    assert db_file.stat().st_size < 200_000 < (tmp_path / "outbox.sqlite-wal").stat().st_size
    assert box.checkpoint()  # what the link's thread (after its deletes) and the app's thread call
    assert db_file.stat().st_size > 3000 * 1300
    assert not box.checkpoint()  # nothing new since: no work
    box.close()
    assert [p.seq for p in outbox(tmp_path).pending(0, 5000)] == list(range(1, 3001))
