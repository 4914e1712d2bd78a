"""Token buckets with the time passed in: a burst, then the rate, and the wait to say."""

from __future__ import annotations

from appliance.broker.ratelimit import Bucket, KeyedLimiter, retry_after_header


def test_a_bucket_allows_its_burst_then_names_the_wait() -> None:
    bucket = Bucket(rate=0.5, burst=3)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == 2.0  # one request back every 2 s
    assert bucket.take(101.0) == 1.0
    assert bucket.take(102.0) == 0.0


def test_a_bucket_refills_only_up_to_its_burst() -> None:
    bucket = Bucket(rate=1.0, burst=2)
    bucket.take(0.0)
    assert [bucket.take(1000.0) for _ in range(3)] == [0.0, 0.0, 1.0]


def test_time_going_backwards_gives_nothing_back() -> None:
    bucket = Bucket(rate=1.0, burst=1)
    assert bucket.take(50.0) == 0.0
    assert bucket.take(10.0) > 0.0


def test_devices_have_separate_buckets() -> None:
    limiter = KeyedLimiter(rate=1 / 60, burst=1, max_keys=10)
    assert limiter.take("a", 0.0) == 0.0
    assert limiter.take("a", 0.0) > 0.0
    assert limiter.take("b", 0.0) == 0.0


def test_the_limiter_forgets_the_least_recently_used_past_its_bound() -> None:
    limiter = KeyedLimiter(rate=1 / 60, burst=1, max_keys=2)
    limiter.take("a", 0.0)
    limiter.take("b", 0.0)
    limiter.take("a", 1.0)  # refused, but "a" is now the most recent
    limiter.take("c", 1.0)  # "b" goes
    assert limiter.take("a", 1.0) > 0.0
    assert limiter.take("b", 1.0) == 0.0


def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one() -> None:
    assert [retry_after_header(s) for s in (0.01, 1.0, 1.2, 29.5)] == ["1", "1", "2", "30"]
