"""The token bucket: `rate` tokens a second, at most `burst` of them saved up.

Two budgets use it: the pipeline's embeddings per second (the pace can change rate and burst at any
frame) and the drainer's backlog messages per second. A bucket that has never been used starts full.
"""

from __future__ import annotations

from dataclasses import dataclass

# Float dust (0.1 s x 10/s = 0.9999999) must not cost a whole token.
DUST = 1e-3


@dataclass
class TokenBucket:
    rate: float  # tokens per second
    burst: float  # the most that can be saved up
    tokens: float = 0.0
    at: float | None = None  # when it was last refilled; None: never used, so full

    def fill(self, now: float) -> None:
        self.tokens, self.at = self.burst, now

    def available(self, now: float) -> float:
        """Refill up to `now` and return the tokens there are (a fraction of one included)."""
        if self.at is None:
            self.tokens = self.burst
        else:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        return self.tokens

    def whole(self, now: float) -> int:
        return int(self.available(now) + DUST)

    def take(self, now: float, count: float = 1.0) -> bool:
        if self.available(now) + DUST < count:
            return False
        self.spend(count)
        return True

    def spend(self, count: float = 1.0) -> None:
        """Use tokens already counted by `whole()` or `available()`, as a caller that sends up to that
        many does, one at a time, without refilling between them."""
        self.tokens -= count
