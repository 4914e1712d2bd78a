"""The field recorder reads the capture ring from a start index into the spool."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import wave

import numpy as np

from appliance.audio.ring import RingBuffer
from appliance.spool import store as st
from appliance.spool.recorder import Recording

from .helpers import make_spool

RATE = 16000
BLOCK = 320  # 20 ms capture blocks


def signal_at(start: int, n: int) -> np.ndarray:
    return (((np.arange(start, start + n) * 7919) % 65536) - 32768).astype(np.int16)


def read_all(spool, rid) -> np.ndarray:
    parts = []
    for p in spool.segments(rid):
        with wave.open(str(p), "rb") as w:
            parts.append(np.frombuffer(w.readframes(w.getnframes()), np.int16))
    return np.concatenate(parts)


async def feed(ring: RingBuffer, start: int, blocks: int) -> int:
    for _ in range(blocks):
        ring.write(signal_at(start, BLOCK), t_first=start / RATE)
        start += BLOCK
        await asyncio.sleep(0.002)
    return start


async def test_records_from_the_preroll_index_to_the_stop(tmp_path):
    spool = make_spool(tmp_path, segment_seconds=1.0)
    ring = RingBuffer(RATE, history_seconds=5)
    fed = await feed(ring, 0, 50)  # 1 s before the press
    start = fed - RATE // 2  # half a second of pre-roll
    rec = Recording(ring, spool)
    task = asyncio.create_task(rec.run(start))
    fed = await feed(ring, fed, 100)
    rec.request_stop()
    account = await asyncio.wait_for(task, 10)
    assert account.start_index == start and account.end_index == fed
    assert account.lost_samples == 0 and account.refused_samples == 0
    row = spool.get(account.recording_id)
    assert row.state == st.READY and row.origin == "record"
    np.testing.assert_array_equal(read_all(spool, row.id), signal_at(start, fed - start))


async def test_reader_loss_is_recorded_not_hidden(tmp_path):
    spool = make_spool(tmp_path)
    ring = RingBuffer(RATE, history_seconds=2)
    fed = await feed(ring, 0, 250)  # 5 s written; the ring keeps only the last 2 s
    rec = Recording(ring, spool)
    task = asyncio.create_task(rec.run(0))
    await asyncio.sleep(0.05)
    rec.request_stop()
    account = await asyncio.wait_for(task, 10)
    assert account.lost_samples == fed - 2 * RATE
    row = spool.get(account.recording_id)
    assert row.lost_samples == account.lost_samples
    assert row.gaps == [{"at": 0, "samples": account.lost_samples}]


def test_live_gap_keeps_session_and_offset(tmp_path):
    spool = make_spool(tmp_path)
    writer = spool.open_recording("live-gap", RATE, session_id="abc-123", session_offset=48000)
    writer.write(signal_at(0, 1600))
    rid = writer.close()
    row = spool.get(rid)
    assert (row.origin, row.session_id, row.session_offset) == ("live-gap", "abc-123", 48000)


async def test_copying_goes_on_while_the_event_loop_is_blocked(tmp_path):
    # The copying thread is woken by the ring's writer, not by the loop: a busy loop
    # (or one asleep) does not hold audio back from the spool.
    spool = make_spool(tmp_path)
    ring = RingBuffer(RATE, history_seconds=5)
    rec = Recording(ring, spool)
    task = asyncio.create_task(rec.run(0))
    while rec.writer is None:
        await asyncio.sleep(0.01)
    for i in range(25):  # the loop runs nothing from here until the writer has it all
        ring.write(signal_at(i * BLOCK, BLOCK), t_first=i * BLOCK / RATE)
    deadline = time.monotonic() + 10
    while rec.writer.samples_written < 25 * BLOCK and time.monotonic() < deadline:
        time.sleep(0.005)
    assert rec.writer.samples_written >= 25 * BLOCK - rec.chunk + 1
    rec.request_stop()
    account = await asyncio.wait_for(task, 10)
    np.testing.assert_array_equal(read_all(spool, account.recording_id), signal_at(0, 25 * BLOCK))


async def test_a_cancelled_recording_keeps_what_was_copied(tmp_path):
    spool = make_spool(tmp_path)
    ring = RingBuffer(RATE, history_seconds=5)
    rec = Recording(ring, spool)
    task = asyncio.create_task(rec.run(0))
    fed = await feed(ring, 0, 50)
    while rec.writer is None or rec.writer.samples_written < fed - rec.chunk + 1:
        await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    assert not any(t.name == "recorder" for t in threading.enumerate())
    row = spool.get(rec.writer.id)
    assert row.state == st.READY
    written = rec.writer.samples_written
    np.testing.assert_array_equal(read_all(spool, row.id), signal_at(0, written))
