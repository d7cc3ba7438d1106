"""Exponential backoff with jitter, shared by everything that retries (camera reopen, MQTT reconnect).

Jitter spreads the retries of a fleet that lost its broker at the same moment, so they do not all
come back in the same second.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    minimum: float
    maximum: float
    jitter: float = 0.2  # +- this fraction of the delay
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        base = min(self.maximum, self.minimum * (2.0 ** min(self.attempt, 30)))
        self.attempt += 1
        return max(0.0, base * (1.0 + self.jitter * self.rng.uniform(-1.0, 1.0)))

    def reset(self) -> None:
        self.attempt = 0
