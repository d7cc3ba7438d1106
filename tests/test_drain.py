"""Flow control between the outbox and the wire: in-flight bound, live first, drain rate, resends."""

from __future__ import annotations

from pathlib import Path

from device.clock import FakeClock
from device.config import OutboxConfig
from device.link.drain import Drainer
from device.link.outbox import Outbox, Pending

from .test_outbox import message


class Wire:
    """Records what the drainer puts on the wire and hands out MQTT message ids, like paho does."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self.mids: dict[int, int] = {}
        self.next_mid = 1

    def publish(self, item: Pending) -> int:
        self.sent.append(item.seq)
        mid = self.next_mid
        self.mids[item.seq] = mid
        self.next_mid += 1
        return mid


def setup(tmp_path: Path, **settings: object) -> tuple[Outbox, Drainer, Wire, FakeClock]:
    clock = FakeClock()
    config = OutboxConfig.model_validate(settings)
    box = Outbox(tmp_path / "outbox.sqlite", config, clock)
    return box, Drainer(box, config, clock), Wire(), clock


def test_in_flight_messages_are_bounded_and_acks_free_room(tmp_path: Path) -> None:
    box, drainer, wire, _ = setup(tmp_path, max_inflight=4)
    drainer.connected()
    for i in range(10):
        box.add(message(i))
    drainer.pump(wire.publish)
    assert wire.sent == [1, 2, 3, 4] and drainer.inflight == 4
    drainer.pump(wire.publish)
    assert wire.sent == [1, 2, 3, 4]  # full: nothing more until a PUBACK
    drainer.acked(wire.mids[1], failed=False, reason="Success")
    drainer.pump(wire.publish)
    assert wire.sent == [1, 2, 3, 4, 5]
    drainer.flush()
    assert [p.seq for p in box.pending(0, 100)][:1] == [2]  # acknowledged means deleted


def test_live_messages_overtake_the_backlog_which_drains_at_its_rate(tmp_path: Path) -> None:
    box, drainer, wire, clock = setup(tmp_path, max_inflight=1000, drain_rate_per_s=10)
    for i in range(100):
        box.add(message(i))  # an outage's backlog: seq 1..100
    drainer.connected()
    for i in range(3):
        box.add(message(i))  # live: seq 101..103
    drainer.pump(wire.publish)
    assert wire.sent[:3] == [101, 102, 103]
    backlog = wire.sent[3:]
    assert backlog == [1]  # one burst (a tenth of a second's budget: 1 message) at once
    for _ in range(50):  # 5 s at 10 messages per second
        clock.advance(0.1)
        drainer.pump(wire.publish)
    backlog = wire.sent[3:]
    assert backlog == list(range(1, 52))  # the burst, then one per 0.1 s: exact on a fake clock


def test_a_disconnect_resends_everything_unacknowledged_in_order(tmp_path: Path) -> None:
    box, drainer, wire, _ = setup(tmp_path, max_inflight=5)
    for i in range(8):
        box.add(message(i))
    drainer.connected()
    drainer.pump(wire.publish)
    drainer.acked(wire.mids[1], failed=False, reason="Success")
    drainer.acked(wire.mids[2], failed=False, reason="Success")
    drainer.disconnected()
    assert drainer.stats.resends == 3
    drainer.connected()
    first = len(wire.sent)
    drainer.pump(wire.publish)
    assert wire.sent[first:] == [3, 4, 5, 6, 7]  # the backlog, oldest first, never 1 or 2 again


def test_a_rejected_message_is_dropped_not_retried_forever(tmp_path: Path) -> None:
    box, drainer, wire, _ = setup(tmp_path)
    box.add(message())
    drainer.connected()
    drainer.pump(wire.publish)
    drainer.acked(wire.mids[1], failed=True, reason="Not authorized")
    drainer.flush()
    assert drainer.stats.rejected == 1 and box.pending(0, 10) == []
    snapshot = drainer.snapshot()
    assert snapshot["rejected"] == 1 and snapshot["depth"] == 0
