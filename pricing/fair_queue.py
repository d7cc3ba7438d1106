"""The pricing service's request queue: one line per device, served in turn.

With one first-in-first-out queue, a device that floods the service puts every other device's request
behind its whole backlog: their quotes come seconds late, or not at all once the queue is full. Here
each sender (the topic, which names one device) has its own bounded line, and the worker takes one
request from each line in turn. A flooding device waits behind itself only; an honest device's request
waits for at most one request from each other busy device. Past its own cap a device's requests are
dropped and counted (`device_backlog`), so it cannot fill the shared total either.

Connection events go ahead of everything (a reconnect must resubscribe before anything else is served).
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict, deque
from typing import Generic, TypeVar

T = TypeVar("T")
C = TypeVar("C")

# An honest device sends a few objects per second and, after an outage, drains its backlog at its
# outbox's drain rate (docs/outbox.md); 1,000 waiting requests is minutes of that.
PER_SENDER = 1000
# All senders together. Requests are at most a few KB (the service refuses larger payloads on arrival),
# so this bounds the queue to some tens of MB even when every line is full.
TOTAL = 10_000


class FairQueue(Generic[T, C]):
    def __init__(self, per_sender: int = PER_SENDER, total: int = TOTAL) -> None:
        self.per_sender = per_sender
        self.total = total
        self.dropped: Counter[str] = Counter()  # "device_backlog" or "overloaded"
        self._lines: OrderedDict[str, deque[T]] = OrderedDict()  # senders with work, in serving order
        self._control: deque[C] = deque()
        self._size = 0
        self._ready = threading.Condition()

    def put(self, sender: str, item: T) -> bool:
        """Queue `item` in `sender`'s line; False (and counted) when its line or the whole queue is full."""
        with self._ready:
            line = self._lines.get(sender)
            if line is not None and len(line) >= self.per_sender:
                self.dropped["device_backlog"] += 1
                return False
            if self._size >= self.total:
                self.dropped["overloaded"] += 1
                return False
            if line is None:
                line = self._lines[sender] = deque()
            line.append(item)
            self._size += 1
            self._ready.notify()
            return True

    def put_control(self, event: C) -> None:
        with self._ready:
            self._control.append(event)
            self._ready.notify()

    def get(self, timeout: float) -> T | C | None:
        """The next control event, else the next sender's oldest request; None after `timeout` idle."""
        with self._ready:
            if not self._control and not self._size:
                self._ready.wait(timeout)
            if self._control:
                return self._control.popleft()
            if not self._size:
                return None
            sender, line = next(iter(self._lines.items()))
            item = line.popleft()
            self._size -= 1
            if line:
                self._lines.move_to_end(sender)  # to the back of the round
            else:
                del self._lines[sender]
            return item

    def qsize(self) -> int:
        return self._size

    def senders(self) -> int:
        return len(self._lines)
