"""Small, allocation-free statistics for the hot path: moving averages, rates and latency percentiles."""

from __future__ import annotations

from collections import deque

import numpy as np


class MovingAverage:
    """Exponential moving average. alpha = 0.1 weighs roughly the last 20 samples: steady enough for a
    stats line, quick enough to show a change of pace within a second or two."""

    def __init__(self, alpha: float = 0.1) -> None:
        self.alpha = alpha
        self.value: float | None = None

    def add(self, sample: float) -> None:
        self.value = sample if self.value is None else self.value + self.alpha * (sample - self.value)


class RateMeter:
    """Events per second over a sliding window of the last `window` seconds."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._times: deque[float] = deque()

    def tick(self, now: float) -> None:
        self._times.append(now)
        self._trim(now)

    def rate(self, now: float) -> float:
        self._trim(now)
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()


class Percentiles:
    """The last `size` samples, for p50 / p99 of latencies."""

    def __init__(self, size: int = 2048) -> None:
        self._samples: deque[float] = deque(maxlen=size)

    def add(self, sample: float) -> None:
        self._samples.append(sample)

    def __len__(self) -> int:
        return len(self._samples)

    def samples(self) -> list[float]:
        return list(self._samples)

    def get(self, q: float) -> float | None:
        return float(np.percentile(np.fromiter(self._samples, float), q)) if self._samples else None
