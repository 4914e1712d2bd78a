"""The device's own sounds stay out of what the microphone sends: the rule, with time passed in."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.audio.own_sound import (
    MERGE_GAP_SECONDS,
    OwnSound,
    heard_between,
    link_own_sound,
    quiet_from,
)
from appliance.audio.playback import AudioPlayback
from appliance.audio.ring import RingBuffer

RATE = 1000  # one sample per ms: indexes read as milliseconds
T0 = 100.0  # the ring's sample 0 was captured at t = 100 s


def loud_ring(seconds: float = 3.0, block: int = 100) -> RingBuffer:
    """A ring of constant non-zero samples stamped from ``T0``, written block by block."""
    ring = RingBuffer(RATE, history_seconds=10.0)
    total = round(seconds * RATE)
    for start in range(0, total, block):
        ring.write(np.full(block, 1000, dtype=np.int16), T0 + start / RATE)
    return ring


def zero_runs(samples: np.ndarray, start: int) -> list[tuple[int, int]]:
    """Absolute [first, end) index ranges where ``samples`` (from ``start``) are zero."""
    padded = np.concatenate(([False], samples == 0, [False]))
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    return [(start + int(a), start + int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def test_heard_between_widens_what_left_the_speaker_by_the_tail_on_each_side():
    assert heard_between(10.0, 10.12, 0.05) == pytest.approx((9.95, 10.17))
    assert heard_between(10.0, 10.12, -1.0) == (10.0, 10.12)  # no negative tail


def test_the_speaker_is_quiet_after_its_output_latency_and_the_tail():
    assert quiet_from(20.0, 0.03, 0.05) == pytest.approx(20.08)
    assert quiet_from(20.0, -0.01, 0.0) == 20.0


def test_blocks_played_back_to_back_are_one_sound_and_a_pause_starts_another():
    own = OwnSound(tail=0.0)
    for k in range(12):  # 120 ms of an earcon in 10 ms blocks
        own.left_speaker(5.0 + k * 0.01, 5.01 + k * 0.01)
    later = 5.12 + MERGE_GAP_SECONDS + 0.01
    own.left_speaker(later, later + 0.05)
    flat = [t for sound in own.sounds for t in sound]
    assert flat == pytest.approx([5.0, 5.12, later, later + 0.05])


def test_only_the_newest_sounds_are_remembered():
    own = OwnSound(max_sounds=3)
    for k in range(5):
        own.left_speaker(float(k), k + 0.1)
    assert [start for start, _ in own.sounds] == [2.0, 3.0, 4.0]


def test_a_read_silences_exactly_what_was_captured_while_the_earcon_was_audible():
    ring = loud_ring()
    own = OwnSound(tail=0.05)
    ring.own_sound = own
    own.left_speaker(T0 + 1.0, T0 + 1.12)  # the earcon left the speaker 1.00-1.12 s in
    result = ring.read(500, 1500)  # 0.5 s of pre-roll before it, and what follows
    assert zero_runs(result.samples, result.start) == [(950, 1171)]
    assert result.silenced == 1171 - 950
    assert result.lost == 0 and result.start == 500  # indexes stay where they were


def test_reads_that_miss_the_sound_are_untouched_and_a_reader_sees_the_same_silence():
    ring = loud_ring()
    own = OwnSound(tail=0.05)
    ring.own_sound = own
    own.left_speaker(T0 + 1.0, T0 + 1.12)
    before = ring.read(0, 900)
    assert before.silenced == 0 and np.all(before.samples == 1000)
    reader = ring.reader(0)
    pieces = [reader.read(100) for _ in range(30)]  # a session's small reads
    joined = np.concatenate([p.samples for p in pieces])
    assert zero_runs(joined, 0) == [(950, 1171)]
    assert sum(p.silenced for p in pieces) == 1171 - 950


def test_overlapping_sounds_are_silenced_and_counted_once():
    ring = loud_ring()
    own = OwnSound(tail=0.05)
    ring.own_sound = own
    own.left_speaker(T0 + 1.0, T0 + 1.1)
    own.left_speaker(T0 + 1.16, T0 + 1.3)  # a separate sound whose span overlaps the first's
    result = ring.read(0, 3000)
    assert zero_runs(result.samples, 0) == [(950, 1351)]
    assert result.silenced == 1351 - 950


def test_a_ring_without_a_speaker_linked_reads_what_it_captured():
    ring = loud_ring()
    result = ring.read(0, 3000)
    assert result.silenced == 0 and np.all(result.samples == 1000)


def speaker(output_latency: float) -> AudioPlayback:
    """A playback whose callback the test calls itself, as the device would (no stream)."""
    spk = AudioPlayback(input_rate=24000, jitter_buffer_ms=0)
    spk.rate = 24000
    spk._output_latency = output_latency
    return spk


def test_playback_notes_when_an_earcon_leaves_the_speaker_and_not_a_reply():
    spk = speaker(output_latency=0.02)
    ring = RingBuffer(24000, 2.0)
    own = link_own_sound(ring, spk, tail=0.0)
    spk.write(np.full(480, 100, dtype=np.int16))  # 20 ms of reply: not the device's own
    spk.end_of_stream()
    for _ in range(3):
        spk._callback(None, 240, None, 0)
    assert own.sounds == ()
    spk.write_own_sound(np.full(2400, 100, dtype=np.int16).tobytes())  # a 100 ms earcon
    spk.end_of_stream()
    first_block_at = None
    for _ in range(12):
        spk._callback(None, 240, None, 0)
        first_block_at = first_block_at or spk.last_callback_time
    ((start, end),) = own.sounds
    assert start == pytest.approx(first_block_at + 0.02)  # callback time + output latency
    assert end == pytest.approx(spk.last_callback_time + 0.02 + 0.01, abs=0.002)


def test_portaudio_s_own_estimate_of_a_block_s_latency_is_used_when_it_is_longer():
    spk = speaker(output_latency=0.02)
    own = link_own_sound(RingBuffer(24000, 2.0), spk)
    spk.write_own_sound(np.full(240, 100, dtype=np.int16))
    spk.end_of_stream()
    spk._callback(None, 240, {"output_buffer_dac_time": 7.035, "current_time": 7.0}, 0)
    ((start, _),) = own.sounds
    assert start == pytest.approx(spk.last_callback_time + 0.035)


def test_a_flushed_earcon_is_not_noted_as_played():
    spk = speaker(output_latency=0.02)
    own = link_own_sound(RingBuffer(24000, 2.0), spk)
    spk.write_own_sound(np.full(2400, 100, dtype=np.int16))
    spk.flush()
    spk.write(np.full(2400, 100, dtype=np.int16))  # then a reply, which is not
    spk.end_of_stream()
    for _ in range(12):
        spk._callback(None, 240, None, 0)
    assert own.sounds == ()


def test_the_speaker_is_quiet_only_after_its_output_latency_and_the_tail_passed():
    spk = speaker(output_latency=0.03)
    spk.write(np.full(240, 100, dtype=np.int16))
    assert not spk.quiet(0.05, now=1e9)  # queued: not quiet whatever the time
    spk.end_of_stream()
    spk._callback(None, 240, None, 0)
    spk._callback(None, 240, None, 0)  # ran dry
    assert spk.idle
    assert not spk.quiet(0.05, now=spk.idle_since + 0.079)
    assert spk.quiet(0.05, now=spk.idle_since + 0.081)
