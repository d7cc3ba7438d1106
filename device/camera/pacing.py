"""Delivering frames at a source's own rate, the way a camera would."""

from __future__ import annotations

from device.clock import Clock


class Pacer:
    """Sleeps until the next frame is due; a period of 0 means as fast as the consumer reads."""

    def __init__(self, clock: Clock, period_s: float = 0.0) -> None:
        self.clock = clock
        self.period_s = period_s
        self._next_due = clock.monotonic()

    def restart(self, period_s: float) -> None:
        self.period_s = period_s
        self._next_due = self.clock.monotonic()

    def wait(self) -> None:
        if self.period_s <= 0:
            return
        now = self.clock.monotonic()
        if self._next_due > now:
            self.clock.sleep(self._next_due - now)
        # Schedule from the due time, not from now, so the rate does not drift; but never build up a
        # burst of catch-up frames after a stall.
        self._next_due = max(self._next_due + self.period_s, now)
