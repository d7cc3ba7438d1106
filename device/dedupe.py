"""Exactly-once from at-least-once: drop repeated (device_id, epoch, seq) triples.

The appliance delivers every object message at least once; after a reconnect or a crash a few may come
twice (at most the device's in-flight window). Subscribers and the pricing service keep one
Deduplicator and ask `is_new(device_id, seq, epoch)` for each message (docs/wire.md).

Each device's seen seqs are kept as a short sorted list of disjoint ranges. An honest device needs one
or two: its seqs rise by one, and live-first delivery interleaves at most one backlog below them. So the
usual message costs O(1) (it extends the last range) and any message at most O(log R + R) with R capped
at `max_ranges`. A device that sends scattered numbers, on purpose or not, costs the same bounded time
and memory per message as any other: past the cap, the two lowest ranges are joined and the numbers in
between count as seen (`forgotten`), as the oldest part of a sliding window would. A huge seq (2^64-1)
is just one more range: it does not hide the seqs below it. Memory per device is bounded by the cap,
and at most `max_devices` devices are tracked; the one heard from least recently is forgotten first.

The epoch (an MQTT v5 user property on each object message) changes when a device starts numbering from
1 again, its state wiped or the card re-flashed. A new epoch gets a fresh window instead of having all
its messages dropped as repeats; the previous epoch's window is kept too (`epochs` per device), so a
late duplicate from before the change is still caught.

Standard library only, so any subscriber can copy or import it without the rest of the firmware.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass, field

# 32 ranges: an honest device uses 1-3 (live + backlog + a resend or two); the rest is headroom for
# reordering, and the cap keeps a device's state under about 2 KB.
MAX_RANGES = 32
REPEAT = -1


@dataclass
class _Ranges:
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)  # inclusive; ranges are disjoint and never adjacent

    def add(self, seq: int, max_ranges: int) -> int:
        """REPEAT, or how many unseen numbers were given up to make room (0 unless the cap was hit)."""
        starts, ends = self.starts, self.ends
        if ends and seq == ends[-1] + 1:  # the usual case: the next number in order
            ends[-1] = seq
            return 0
        i = bisect_right(starts, seq) - 1
        if i >= 0 and seq <= ends[i]:
            return REPEAT
        joins_left = i >= 0 and ends[i] + 1 == seq
        joins_right = i + 1 < len(starts) and starts[i + 1] == seq + 1
        if joins_left and joins_right:
            ends[i] = ends.pop(i + 1)
            del starts[i + 1]
        elif joins_left:
            ends[i] = seq
        elif joins_right:
            starts[i + 1] = seq
        else:
            starts.insert(i + 1, seq)
            ends.insert(i + 1, seq)
            if len(starts) > max_ranges:
                return self._join_lowest()
        return 0

    def _join_lowest(self) -> int:
        given_up = self.starts[1] - self.ends[0] - 1
        self.ends[0] = self.ends.pop(1)
        del self.starts[1]
        return given_up

    def gaps(self, limit: int) -> list[int]:
        out: list[int] = []
        for end, start in zip(self.ends, self.starts[1:], strict=False):
            out.extend(range(end + 1, min(start, end + 1 + limit - len(out))))
            if len(out) >= limit:
                break
        return out


class Deduplicator:
    def __init__(self, max_ranges: int = MAX_RANGES, max_devices: int = 10_000, epochs: int = 2) -> None:
        self.max_ranges = max_ranges
        self.max_devices = max_devices
        self.epochs = epochs
        self.duplicates = 0
        self.resets = 0  # a device came back with a new epoch
        self.forgotten = 0  # unseen seqs given up because a device's ranges hit the cap
        self._devices: OrderedDict[str, OrderedDict[str, _Ranges]] = OrderedDict()

    def is_new(self, device_id: str, seq: int, epoch: str = "") -> bool:
        """True the first time (device_id, epoch, seq) is offered; False for a repeat (counted)."""
        given_up = self._ranges(device_id, epoch).add(seq, self.max_ranges)
        if given_up == REPEAT:
            self.duplicates += 1
            return False
        self.forgotten += given_up
        return True

    def _ranges(self, device_id: str, epoch: str) -> _Ranges:
        windows = self._devices.get(device_id)
        if windows is None:
            windows = self._devices[device_id] = OrderedDict()
            if len(self._devices) > self.max_devices:
                self._devices.popitem(last=False)
        else:
            self._devices.move_to_end(device_id)
        ranges = windows.get(epoch)
        if ranges is None:
            if windows:
                self.resets += 1
            ranges = windows[epoch] = _Ranges()
            if len(windows) > self.epochs:
                windows.popitem(last=False)
        return ranges

    def ranges(self, device_id: str, epoch: str = "") -> int:
        """How many ranges this device's window holds (1 for a device heard in order)."""
        windows = self._devices.get(device_id)
        return len(windows[epoch].starts) if windows and epoch in windows else 0

    def missing(self, device_id: str, epoch: str = "", limit: int = 1000) -> list[int]:
        """Up to `limit` seqs between the lowest and the highest seen that have not arrived (yet)."""
        windows = self._devices.get(device_id)
        if not windows or epoch not in windows:
            return []
        return windows[epoch].gaps(limit)
