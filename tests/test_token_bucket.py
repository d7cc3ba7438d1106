"""The one token bucket (device/token_bucket.py) behind the embedding budget and the backlog drain."""

from __future__ import annotations

from device.token_bucket import TokenBucket


def test_a_new_bucket_is_full_and_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=10.0, burst=3.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.whole(100.25) == 2  # 2.5 tokens in a quarter of a second
    assert bucket.whole(200.0) == 3  # saved up for 100 s, capped at the burst


def test_float_dust_does_not_cost_a_token() -> None:
    bucket = TokenBucket(rate=10.0, burst=1.0)
    bucket.fill(1_800_000_000.0)
    assert bucket.take(1_800_000_000.0)
    now = 1_800_000_000.0
    for _ in range(10):  # 0.1 s at 10/s is 0.9999999... on these clock values
        now += 0.1
        assert bucket.take(now)


def test_tokens_counted_by_whole_are_spent_one_at_a_time() -> None:
    """The drainer's way: count what may go now, send up to that many, spend one per message sent."""
    bucket = TokenBucket(rate=10.0, burst=5.0)
    assert bucket.whole(100.0) == 5
    for _ in range(3):  # three sent, then the broker's window closed
        bucket.spend()
    assert bucket.whole(100.0) == 2  # no refill in between, and the unsent two are still there
    assert bucket.whole(100.1) == 3
