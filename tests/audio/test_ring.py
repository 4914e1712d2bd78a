"""RingBuffer behaviour without audio hardware: indices, wraparound, readers, loss, clock."""

import threading
import time

import numpy as np
import pytest

from appliance.audio.ring import RingBuffer

RATE = 1000  # 1 sample per ms keeps the clock arithmetic readable


def ramp(start: int, n: int) -> np.ndarray:
    """Samples whose value encodes their absolute index (mod 2**15)."""
    return (np.arange(start, start + n) % 32768).astype(np.int16)


def fill(ring: RingBuffer, total: int, block: int, t0: float = 100.0) -> None:
    for start in range(0, total, block):
        n = min(block, total - start)
        ring.write(ramp(start, n), t0 + start / ring.rate)


def test_write_then_read_returns_the_same_samples_at_their_indices():
    ring = RingBuffer(RATE, history_seconds=1.0)
    fill(ring, 700, 70)
    result = ring.read(100, 300)
    assert result.start == 100 and result.lost == 0 and result.end == 400
    np.testing.assert_array_equal(result.samples, ramp(100, 300))


def test_wraparound_keeps_the_newest_history_contiguous():
    ring = RingBuffer(RATE, history_seconds=1.0)  # capacity 1000
    fill(ring, 2530, 170)  # blocks that straddle the wrap point
    assert ring.write_index == 2530
    assert ring.oldest_index == 1530
    result = ring.read(ring.oldest_index, 5000)
    assert result.start == 1530 and len(result.samples) == 1000 and result.lost == 0
    np.testing.assert_array_equal(result.samples, ramp(1530, 1000))


def test_a_single_write_larger_than_the_history_keeps_its_tail():
    ring = RingBuffer(RATE, history_seconds=1.0)
    ring.write(ramp(0, 2500), 0.0)
    assert ring.write_index == 2500
    result = ring.read(0, 5000)
    assert result.lost == 1500 and result.start == 1500
    np.testing.assert_array_equal(result.samples, ramp(1500, 1000))


def test_strided_channel_view_is_written_as_mono():
    ring = RingBuffer(RATE, history_seconds=1.0)
    stereo = np.zeros((100, 2), dtype=np.int16)
    stereo[:, 1] = ramp(0, 100)
    ring.write(stereo.reshape(-1)[1::2], 0.0)
    np.testing.assert_array_equal(ring.read(0, 100).samples, ramp(0, 100))


def test_reader_that_falls_behind_learns_exactly_how_many_samples_it_lost():
    ring = RingBuffer(RATE, history_seconds=1.0)
    reader = ring.reader(0)
    fill(ring, 300, 100)
    first = reader.read(200)
    assert first.lost == 0 and first.end == 200
    fill_from = 300
    for start in range(fill_from, 1700, 100):  # the reader sleeps while 1400 more arrive
        ring.write(ramp(start, 100), 100.0 + start / RATE)
    second = reader.read(10_000)
    # History holds 700..1699; the reader was at 200, so 500 samples are gone.
    assert second.lost == 500
    assert second.start == 700
    np.testing.assert_array_equal(second.samples, ramp(700, 1000))
    assert reader.lost_total == 500
    assert reader.position == 1700


def test_readers_are_independent():
    ring = RingBuffer(RATE, history_seconds=1.0)
    fill(ring, 500, 50)
    fast, slow = ring.reader(0), ring.reader(250)
    a = fast.read(400)
    b = slow.read(100)
    c = fast.read(400)
    assert (a.start, a.end, b.start, b.end, c.start, c.end) == (0, 400, 250, 350, 400, 500)
    assert fast.available == 0 and slow.available == 150


def test_reader_at_the_write_head_gets_nothing_and_loses_nothing():
    ring = RingBuffer(RATE, history_seconds=1.0)
    fill(ring, 100, 100)
    reader = ring.reader()  # from now on
    result = reader.read(100)
    assert len(result.samples) == 0 and result.lost == 0 and result.start == 100


def test_read_into_a_preallocated_buffer():
    ring = RingBuffer(RATE, history_seconds=1.0)
    fill(ring, 300, 100)
    out = np.zeros(200, dtype=np.int16)
    result = ring.read(50, 200, out=out)
    assert np.shares_memory(result.samples, out)
    np.testing.assert_array_equal(result.samples, ramp(50, 200))


def test_clock_mapping_round_trips_index_and_time():
    ring = RingBuffer(RATE, history_seconds=10.0)
    fill(ring, 5000, 20, t0=100.0)
    assert ring.time_at(0) == pytest.approx(100.0)
    assert ring.time_at(2500) == pytest.approx(102.5)
    assert ring.index_at(103.25) == 3250
    assert ring.preroll_index(press_time=104.0, preroll_seconds=0.5) == 3500


def test_clock_origin_ignores_late_callbacks():
    """Blocks delivered late (scheduling jitter) must not shift the mapping later."""
    ring = RingBuffer(RATE, history_seconds=10.0)
    rng = np.random.default_rng(1)
    for start in range(0, 3000, 20):
        lateness = float(rng.uniform(0.0, 0.015))
        ring.write(ramp(start, 20), 100.0 + start / RATE + lateness)
    assert ring.time_at(1000) == pytest.approx(101.0, abs=0.002)


def test_preroll_is_clamped_to_the_history_and_the_write_head():
    ring = RingBuffer(RATE, history_seconds=1.0)
    fill(ring, 3000, 100, t0=100.0)
    assert ring.preroll_index(press_time=100.2, preroll_seconds=0.5) == ring.oldest_index == 2000
    assert ring.preroll_index(press_time=200.0, preroll_seconds=0.5) == ring.write_index


def test_device_gap_is_a_discontinuity_not_a_jump_in_the_index():
    ring = RingBuffer(RATE, history_seconds=10.0)
    fill(ring, 1000, 100, t0=100.0)  # 100.0 .. 101.0
    ring.mark_discontinuity()
    # Capture resumes 2.5 s of wall time later.
    for start in range(1000, 2000, 100):
        ring.write(ramp(start, 100), 103.5 + (start - 1000) / RATE)
    assert ring.write_index == 2000
    (gap,) = ring.discontinuities
    assert gap.index == 1000 and gap.missing_samples == 2500
    # The clock mapping follows each segment.
    assert ring.time_at(500) == pytest.approx(100.5)
    assert ring.time_at(1500) == pytest.approx(104.0)
    assert ring.index_at(100.5) == 500
    assert ring.index_at(104.0) == 1500
    assert ring.index_at(102.0) == 1000  # inside the gap: first sample after it
    # A read across the gap says so.
    result = ring.read(900, 200)
    assert [d.index for d in result.discontinuities] == [1000]
    assert ring.read(1100, 200).discontinuities == ()


def test_concurrent_writer_never_hands_a_reader_torn_or_unreported_data():
    """A slow reader racing a fast writer: what it gets is correct, what it misses is counted."""
    ring = RingBuffer(RATE, history_seconds=0.5)  # tiny history to force overruns
    total = 200_000
    done = threading.Event()

    def writer():
        for start in range(0, total, 37):
            ring.write(ramp(start, min(37, total - start)), start / RATE)
        done.set()

    reader = ring.reader(0)
    received = 0
    thread = threading.Thread(target=writer)
    thread.start()
    while not (done.is_set() and reader.position >= ring.write_index):
        result = reader.read(333)
        if len(result.samples):
            np.testing.assert_array_equal(result.samples, ramp(result.start, len(result.samples)))
        received += len(result.samples)
    thread.join()
    assert received + reader.lost_total == total
    assert reader.position == total


def test_a_waiter_is_called_by_the_write_that_reaches_its_index_and_only_once():
    ring = RingBuffer(RATE, history_seconds=1.0)
    calls: list[int] = []
    ring.call_when_written(150, lambda: calls.append(ring.write_index))
    fill(ring, 140, 20)
    assert calls == []
    ring.write(ramp(140, 20), 101.0)
    ring.write(ramp(160, 20), 101.1)
    assert calls == [160]


def test_a_waiter_for_an_index_already_written_is_called_at_once():
    ring = RingBuffer(RATE, history_seconds=1.0)
    fill(ring, 100, 20)
    calls: list[str] = []
    ring.call_when_written(80, lambda: calls.append("now"))
    assert calls == ["now"]


def test_a_cancelled_waiter_is_never_called():
    ring = RingBuffer(RATE, history_seconds=1.0)
    calls: list[str] = []
    cancel = ring.call_when_written(40, lambda: calls.append("woken"))
    cancel()
    fill(ring, 100, 20)
    assert calls == []


def _late_writer(ring: RingBuffer, blocks: int, block: int, period: float) -> threading.Thread:
    def run() -> None:
        for k in range(blocks):
            time.sleep(period)
            ring.write(ramp(k * block, block), time.monotonic() - block / ring.rate)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_wait_until_returns_once_a_writer_thread_reaches_the_index():
    ring = RingBuffer(RATE, history_seconds=1.0)
    writer = _late_writer(ring, 10, 20, 0.02)
    assert ring.wait_until(150, timeout=5)
    assert ring.write_index >= 150
    writer.join()


async def test_wait_until_async_returns_once_a_writer_thread_reaches_the_index():
    ring = RingBuffer(RATE, history_seconds=1.0)
    writer = _late_writer(ring, 10, 20, 0.02)
    assert await ring.wait_until_async(150, timeout=5)
    assert ring.write_index >= 150
    writer.join()


async def test_wait_until_async_times_out_when_the_writer_stops():
    ring = RingBuffer(RATE, history_seconds=1.0)
    fill(ring, 100, 20, t0=0.0)  # a clock long past: every block is overdue
    assert not await ring.wait_until_async(120, timeout=0.05)
    assert not ring.wait_until(120, timeout=0.05)
    assert await ring.wait_until_async(100, timeout=0)
