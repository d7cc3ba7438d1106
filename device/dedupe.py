"""Exactly-once from at-least-once: drop repeated (device_id, epoch, seq) triples.

The appliance delivers every object message at least once; after a reconnect or a crash a few may come
twice (at most the device's in-flight window). Subscribers and the pricing service keep one
Deduplicator and ask `is_new(device_id, seq, epoch)` for each message (docs/wire.md).

Each device's seen seqs are kept as a short sorted list of disjoint ranges. An honest device needs one
or two: its seqs rise by one, and live-first delivery interleaves at most one backlog below them. The
*live* range is the one a seq last extended (the device's run); the usual message extends it in O(1),
and any message costs at most O(log R + R) with R capped at `max_ranges`. A device that sends scattered
numbers, on purpose or not, costs the same bounded time and memory per message as any other: past the
cap, the lowest range other than the live one and the one just made is forgotten (`forgotten` counts its
seqs). Forgetting can only let a repeat of those seqs through a second time (a second quote, which the
device ignores by its correlation data); it never makes an unseen seq look seen, so no scattering,
however hostile, can silence a device. (Joining ranges instead, as an earlier version did, counted every
number in between as seen: 40 scattered seqs above 1e6 joined the live range to them, and the device's
next in-order seq and all after it were dropped.) A huge seq (2^64-1) is just one more range: it does
not hide the seqs below it. Memory per device is bounded by the cap, and at most `max_devices` devices
are tracked; the one heard from least recently is forgotten first.

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
    live: int = -1  # index of the range a seq last extended (the device's run): never forgotten

    def add(self, seq: int, max_ranges: int) -> int:
        """REPEAT, or how many seen seqs were forgotten to make room (0 unless the cap was hit)."""
        starts, ends, live = self.starts, self.ends, self.live
        # The usual case: the next number of the live range, not touching the range above it.
        if live >= 0 and seq == ends[live] + 1 and (live + 1 == len(starts) or starts[live + 1] > seq + 1):
            ends[live] = seq
            return 0
        i = bisect_right(starts, seq) - 1
        if i >= 0 and seq <= ends[i]:
            return REPEAT
        joins_left = i >= 0 and ends[i] + 1 == seq
        joins_right = i + 1 < len(starts) and starts[i + 1] == seq + 1
        if joins_left and joins_right:
            ends[i] = ends.pop(i + 1)
            del starts[i + 1]
            self.live = i
        elif joins_left:
            ends[i] = seq
            self.live = i
        elif joins_right:
            starts[i + 1] = seq
            self.live = i + 1
        else:
            starts.insert(i + 1, seq)
            ends.insert(i + 1, seq)
            if live > i:
                self.live = live + 1
            if len(starts) > max_ranges:
                return self._forget_lowest(i + 1)
        return 0

    def _forget_lowest(self, new: int) -> int:
        """Drop the lowest range but the live one and the one just made (so the last seq offered is
        always remembered), as the oldest part of a sliding window would go. Chosen among the lowest
        three, so O(1): a scan for the smallest range tripled the cost of a scattered message. Never
        join ranges instead: that counts the unseen numbers between them as seen, and drops them when
        they come."""
        victim = 0
        while victim in (self.live, new):
            victim += 1
        forgotten = self.ends[victim] - self.starts[victim] + 1
        del self.starts[victim], self.ends[victim]
        if victim < self.live:
            self.live -= 1
        return forgotten

    def gaps(self, limit: int) -> list[int]:
        out: list[int] = []
        for end, start in zip(self.ends, self.starts[1:], strict=False):
            out.extend(range(end + 1, min(start, end + 1 + limit - len(out))))
            if len(out) >= limit:
                break
        return out


class Deduplicator:
    def __init__(self, max_ranges: int = MAX_RANGES, max_devices: int = 10_000, epochs: int = 2) -> None:
        if max_ranges < 2:
            raise ValueError(
                f"max_ranges is {max_ranges}: it must be at least 2 (the live range and one more)"
            )
        self.max_ranges = max_ranges
        self.max_devices = max_devices
        self.epochs = epochs
        self.duplicates = 0
        self.resets = 0  # a device came back with a new epoch
        self.forgotten = 0  # seen seqs no longer remembered because a device's ranges hit the cap
        self._devices: OrderedDict[str, OrderedDict[str, _Ranges]] = OrderedDict()

    def is_new(self, device_id: str, seq: int, epoch: str = "") -> bool:
        """True the first time (device_id, epoch, seq) is offered; False for a repeat (counted)."""
        forgotten = self._ranges(device_id, epoch).add(seq, self.max_ranges)
        if forgotten == REPEAT:
            self.duplicates += 1
            return False
        self.forgotten += forgotten
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
        """Up to `limit` seqs between the lowest and the highest remembered that have not arrived (yet).
        Past the cap this includes seqs that did arrive but were forgotten (`forgotten` > 0)."""
        windows = self._devices.get(device_id)
        if not windows or epoch not in windows:
            return []
        return windows[epoch].gaps(limit)
