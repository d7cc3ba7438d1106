"""Exactly-once from at-least-once: drop repeated (device_id, seq) pairs.

The appliance delivers every object message at least once; after a reconnect or a crash a few may come
twice (at most the device's in-flight window). Subscribers and the pricing service keep one
Deduplicator and ask `is_new(device_id, seq)` for each message.

Memory is bounded: per device, every seq at or below a low-water mark counts as seen, and above it a
window of `window` recent seqs is remembered. Seqs are assigned in order on the device and arrive
nearly in order (live-first delivery interleaves at most one backlog), so a window of 100k covers
a day-long outage at a few messages per second. At most `max_devices` devices are tracked; the one
heard from least recently is forgotten first.

Standard library only, so any subscriber can copy or import it without the rest of the firmware.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class _DeviceWindow:
    low: int = 0  # every seq <= low has been seen (or is too old to matter)
    seen: set[int] = field(default_factory=set)  # seqs above `low` already seen


class Deduplicator:
    def __init__(self, window: int = 100_000, max_devices: int = 10_000) -> None:
        self.window = window
        self.max_devices = max_devices
        self.duplicates = 0
        self._devices: OrderedDict[str, _DeviceWindow] = OrderedDict()

    def is_new(self, device_id: str, seq: int) -> bool:
        """True the first time (device_id, seq) is offered; False for a repeat (counted)."""
        state = self._device(device_id)
        if seq <= state.low or seq in state.seen:
            self.duplicates += 1
            return False
        state.seen.add(seq)
        self._advance(state, seq)
        return True

    def _device(self, device_id: str) -> _DeviceWindow:
        state = self._devices.get(device_id)
        if state is None:
            state = self._devices[device_id] = _DeviceWindow()
            if len(self._devices) > self.max_devices:
                self._devices.popitem(last=False)
        else:
            self._devices.move_to_end(device_id)
        return state

    def _advance(self, state: _DeviceWindow, newest: int) -> None:
        # Fold the contiguous run above `low` into it, then enforce the window.
        while state.low + 1 in state.seen:
            state.low += 1
            state.seen.discard(state.low)
        floor = newest - self.window
        if floor > state.low:
            state.low = floor
            state.seen = {s for s in state.seen if s > floor}

    def missing(self, device_id: str) -> list[int]:
        """Seqs between the low-water mark and the newest seen that have not arrived (yet)."""
        state = self._devices.get(device_id)
        if state is None or not state.seen:
            return []
        return [s for s in range(state.low + 1, max(state.seen)) if s not in state.seen]
