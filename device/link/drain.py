"""Draining the outbox onto the wire: flow control, acknowledgements, resends.

- At most `max_inflight` messages are unacknowledged at once. That bounds both the broker's load and
  the duplicates a crash can cause (a message on the wire when the device dies is sent again).
- Live first: messages produced since the link (re)connected go out at once, ahead of the backlog, so
  the person at the camera gets a quote now, not after the outage's backlog. The backlog drains behind
  them at `drain_rate_per_s`, oldest first. Each device's seq is still strictly increasing within each
  of the two streams, and subscribers restore full order by seq (docs/outbox.md).
- On a disconnect everything in flight is forgotten by paho (drop_out_messages) and sent again from the
  outbox, so a message is never resent twice over, once by paho and once by us.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass

from device.clock import Clock
from device.config import OutboxConfig
from device.link.outbox import Outbox, Pending
from device.metrics import RateMeter
from device.token_bucket import TokenBucket

log = logging.getLogger(__name__)

ACK_BATCH = (
    256  # delete acknowledged messages once this many have gathered (well under SQLite's 32766 params)
)
ACK_FLUSH_S = 0.05  # ... or after this long

Publish = Callable[[Pending], int | None]  # returns the MQTT message id, or None if not sent


@dataclass
class DrainStats:
    sent: int = 0
    acked: int = 0
    resends: int = 0
    rejected: int = 0  # the broker refused a message (PUBACK with an error reason)


class Drainer:
    def __init__(self, outbox: Outbox, config: OutboxConfig, clock: Clock) -> None:
        self.outbox = outbox
        self.config = config
        self.clock = clock
        self.stats = DrainStats()
        self.ack_rate = RateMeter(window=10.0)
        self._inflight: dict[int, int] = {}  # MQTT mid -> seq
        self._acked: list[int] = []  # acknowledged, to be deleted at the next flush
        self._flushed_at = 0.0
        self._boundary = 0  # seq of the newest message stored before this connection
        self._live_cursor = 0
        self._backlog_cursor = 0
        # A tenth of a second's budget may go at once, so the rate is smooth at any pump frequency.
        rate = config.drain_rate_per_s
        self._backlog_budget = TokenBucket(rate, max(1.0, rate / 10))

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    def settled(self) -> bool:
        """Every live message is on the wire and acknowledged (the backlog may still wait its turn)."""
        return not self._inflight and self.outbox.newest_seq() <= self._live_cursor

    def connected(self) -> None:
        self._boundary = self.outbox.newest_seq()
        self._live_cursor = self._boundary
        self._backlog_cursor = 0
        self._backlog_budget.fill(self.clock.monotonic())  # one burst at once: a short backlog goes now

    def disconnected(self) -> None:
        self.flush()
        self.stats.resends += len(self._inflight)
        self._inflight.clear()

    def pump(self, publish: Publish) -> None:
        """Delete what was acknowledged (in batches), then send what flow control allows right now."""
        self._maybe_flush()
        room = self.config.max_inflight - len(self._inflight)
        if room <= 0:
            return
        # Only query when something was stored since the last send: the link loops 100 times a second,
        # and an idle device should not read its SD card that often.
        new = self.outbox.newest_seq() > self._live_cursor
        live = self.outbox.pending(self._live_cursor, room) if new else []
        for item in live:
            if not self._send(item, publish):
                return
            self._live_cursor = item.seq
        room -= len(live)
        budget = min(room, self._backlog_budget.whole(self.clock.monotonic()))
        if budget <= 0 or self._backlog_cursor >= self._boundary:
            return
        for item in self.outbox.pending(self._backlog_cursor, budget):
            if item.seq > self._boundary:
                self._backlog_cursor = self._boundary
                return
            if not self._send(item, publish):
                return
            self._backlog_cursor = item.seq
            self._backlog_budget.spend()

    def _send(self, item: Pending, publish: Publish) -> bool:
        mid = publish(item)
        if mid is None:
            return False
        self._inflight[mid] = item.seq
        self.stats.sent += 1
        return True

    def acked(self, mid: int, failed: bool, reason: str) -> None:
        seq = self._inflight.pop(mid, None)
        if seq is None:
            return  # a status or stats message, not an object
        if failed:
            # The broker will never take it (e.g. not authorised): retrying would block the outbox forever.
            self.stats.rejected += 1
            log.error("broker rejected object seq %d: %s; dropping it", seq, reason)
        self._acked.append(seq)
        self.stats.acked += 1
        self.ack_rate.tick(self.clock.monotonic())

    def flush(self) -> None:
        """Delete every message acknowledged since the last flush, in one transaction."""
        acked, self._acked = self._acked, []
        self._flushed_at = self.clock.monotonic()
        self.outbox.ack(*acked)
        self.outbox.checkpoint()  # here, on the link's thread, rather than inside a frame's insert

    def _maybe_flush(self) -> None:
        # Deleting in batches keeps write transactions (and the write lock the pipeline also needs) rare.
        # An acknowledged message left on disk a few ms longer is harmless: it is never sent again on
        # this connection, and a disconnect flushes first.
        due = self.clock.monotonic() - self._flushed_at >= ACK_FLUSH_S
        if len(self._acked) >= ACK_BATCH or (self._acked and due):
            self.flush()

    def snapshot(self) -> dict[str, object]:
        return {
            **asdict(self.outbox.stats()),
            "inflight": len(self._inflight),
            "sent": self.stats.sent,
            "acked": self.stats.acked,
            "resends": self.stats.resends,
            "rejected": self.stats.rejected,
            "drain_rate_per_s": round(self.ack_rate.rate(self.clock.monotonic()), 1),
        }
