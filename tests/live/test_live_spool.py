"""A live session's spool side: off the event loop, and a full or absent spool is loud loss.

Each test runs a real session against the emulator with one network outage long
enough that the session hands its backlog to the spool, then streams the rest live.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time

import numpy as np
import pytest

from appliance import dtmf
from appliance import events as ev
from appliance.audio.ring import RingBuffer
from appliance.config import ReconnectConfig, streaming_limits
from appliance.live import LiveTranscription
from tests.events import collect

from .helpers import (
    CAPTURE_RATE,
    Feeder,
    heard_live,
    kept_samples,
    make_config,
    real_spool,
    streaming_tokens,
)

DIGITS = "12 34 56 78"
OUTAGE_AT_SECONDS = 0.8
OUTAGE_SECONDS = 4.5  # longer than the live window plus a spool batch
#: How long a test waits for something the session must do while the spool is stalled.
PATIENCE_SECONDS = 15.0


@dataclasses.dataclass
class Outcome:
    live: LiveTranscription
    account: object
    events: list[ev.Event]

    def live_errors(self) -> list[ev.ErrorReported]:
        return [e for e in self.events if isinstance(e, ev.ErrorReported) and e.where == "live"]

    def live_error_states(self) -> list[ev.StateChanged]:
        return [
            e
            for e in self.events
            if isinstance(e, ev.StateChanged) and e.mode == "live" and e.state == "error"
        ]

    def live_digits(self) -> str:
        return "".join(d for _, d in sorted(heard_live(self.live.turns)))


async def run_with_outage(emulator, tmp_path, spool, during=None) -> Outcome:
    """Speak DIGITS; the network goes down for OUTAGE_SECONDS; stop when the audio ends."""
    audio = dtmf.generate(DIGITS, CAPTURE_RATE, lead_ms=300, trail_ms=1500)
    ring = RingBuffer(CAPTURE_RATE, 10.0)
    config = make_config(emulator, tmp_path)
    config.reconnect = ReconnectConfig(base_seconds=0.2, max_seconds=0.5, auth_retry_seconds=1.0)
    limits = streaming_limits(config.live, config.reconnect, ring.history_seconds)
    bus = ev.EventBus()
    seen = collect(bus, ev.Event)
    if spool is not None:
        spool.events = bus
    live = LiveTranscription.from_config(
        config,
        ring,
        streaming_tokens(emulator, config),
        spool,
        bus,
        config.state_path,
        limits=limits,
    )
    feeder = Feeder(ring, audio)
    feeder.start()
    try:
        task = asyncio.create_task(live.run(0))
        await asyncio.sleep(OUTAGE_AT_SECONDS)
        await asyncio.to_thread(emulator.network_down, OUTAGE_SECONDS)
        if during is not None:
            await during(live)
        while not feeder.done.is_set():
            await asyncio.sleep(0.05)
        live.request_stop()
        account = await asyncio.wait_for(task, 30)
    finally:
        feeder.halt.set()
    return Outcome(live, account, seen)


def is_subsequence(part: str, whole: str) -> bool:
    it = iter(whole)
    return all(c in it for c in part)


class SpySpool:
    """The real spool, with a note of which thread each call ran on and an optional stall."""

    def __init__(self, spool, stall_first_write: bool = False) -> None:
        self.spool = spool
        self.threads: set[int] = set()
        self.opens = 0
        self.stall = threading.Event() if stall_first_write else None
        self.stalled = threading.Event()  # set while the first write is held
        self.released_by_test = False
        self.release = threading.Event()

    def open_recording(self, *args, **kwargs):
        self.threads.add(threading.get_ident())
        self.opens += 1
        return SpyWriter(self, self.spool.open_recording(*args, **kwargs))


class SpyWriter:
    def __init__(self, spy: SpySpool, writer) -> None:
        self.spy = spy
        self.writer = writer
        self.id = writer.id

    @property
    def samples_written(self) -> int:
        return self.writer.samples_written

    def note_lost(self, samples: int) -> None:
        self.writer.note_lost(samples)

    def write(self, samples) -> None:
        spy = self.spy
        spy.threads.add(threading.get_ident())
        if spy.stall is not None and not spy.stall.is_set():
            spy.stall.set()
            spy.stalled.set()
            # A disk that hangs; only the test lets it go (or, failing that, a bound).
            spy.released_by_test = spy.release.wait(PATIENCE_SECONDS)
            spy.stalled.clear()
        self.writer.write(samples)

    def close(self):
        self.spy.threads.add(threading.get_ident())
        return self.writer.close()


async def test_a_stalled_spool_write_does_not_stall_live_streaming(emulator, spool, tmp_path):
    spy = SpySpool(spool, stall_first_write=True)
    loop_thread = threading.get_ident()
    finals_during_stall: list[int] = []

    async def while_the_disk_hangs(live: LiveTranscription) -> None:
        deadline = time.monotonic() + PATIENCE_SECONDS
        while not spy.stalled.is_set():
            assert time.monotonic() < deadline, "the session never spooled"
            await asyncio.sleep(0.02)
        before = len(live.turns)
        # The loop must go on: reconnect, stream the backlog, get new final turns.
        while len(live.turns) == before and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        finals_during_stall.append(len(live.turns) - before)
        spy.release.set()

    out = await run_with_outage(emulator, tmp_path, spy, while_the_disk_hangs)
    assert spy.released_by_test and finals_during_stall[0] > 0
    # Every open, write and close ran on one worker thread, never on the event loop.
    assert len(spy.threads) == 1 and loop_thread not in spy.threads
    account = out.account
    assert account.balanced and account.lost_samples == 0
    assert account.spooled_samples == kept_samples(spool, out.live.session_id) > 0
    assert sorted(out.live.spool_recordings) == sorted(r.id for r in spool.list())
    assert all(r.state == "ready" for r in spool.list())  # closed before run() returned
    assert not out.live_errors()


@pytest.mark.parametrize("quota_bytes", [100, 60_000], ids=["nothing-fits", "some-fits"])
async def test_full_spool_counts_lost_audio_once_and_streaming_goes_on(
    emulator, tmp_path, caplog, quota_bytes
):
    spool = real_spool(tmp_path, quota_bytes=quota_bytes)
    spy = SpySpool(spool)
    caplog.set_level(logging.INFO, logger="appliance")
    try:
        out = await run_with_outage(emulator, tmp_path, spy)
        kept = kept_samples(spool, out.live.session_id)
    finally:
        spool.close()
    account, live = out.account, out.live
    # The account stays exact: what the spool refused is lost, what it took is spooled.
    assert account.balanced
    assert account.spooled_samples == kept
    assert account.lost_samples == live.unkept_samples > 0
    if quota_bytes == 100:
        assert kept == 0 and spy.opens >= 2  # several ranges were refused...
    # ...and said so once: one ERROR and one STATE event, one log line.
    assert len(out.live_errors()) == 1 and "spool full" in out.live_errors()[0].message
    assert len(out.live_error_states()) == 1
    refused = [r for r in caplog.records if "cannot be kept" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.ERROR
    # The session itself went on: the last digit, said after the reconnect, came live,
    # and none came twice. ("7" lies at the edge of the backlog the spool took or
    # refused: where that edge falls depends on the jittered reconnect delay and the
    # frame size.)
    heard = out.live_digits()
    assert heard.endswith("8") and is_subsequence(heard, DIGITS.replace(" ", ""))
    assert account.streamed_samples > 0 and account.stop_reason == "stop requested"


async def test_without_a_spool_undeliverable_audio_is_counted_lost_loudly(
    emulator, tmp_path, caplog
):
    caplog.set_level(logging.INFO, logger="appliance")
    out = await run_with_outage(emulator, tmp_path, None)
    account, live = out.account, out.live
    assert account.balanced
    assert account.spooled_samples == 0
    assert account.lost_samples == live.unkept_samples > 0
    assert live.spool_recordings == []
    assert len(out.live_errors()) == 1 and "no spool" in out.live_errors()[0].message
    assert len(out.live_error_states()) == 1
    refused = [r for r in caplog.records if "cannot be kept" in r.getMessage()]
    assert len(refused) == 1 and refused[0].levelno == logging.ERROR
    # The end-of-session account is logged as an error when anything was lost.
    ended = [r for r in caplog.records if "ended: captured" in r.getMessage()]
    assert len(ended) == 1 and ended[0].levelno == logging.ERROR
    # Live streaming goes on: the last digit, said after the reconnect, arrives. ("7"
    # lies at the edge of the backlog dropped for want of a spool: where that edge
    # falls depends on the jittered reconnect delay.)
    assert out.live_digits().endswith("8")


def test_a_gap_closing_on_the_worker_is_not_recovered_under_it(spool):
    """The uploader calls ``spool.recover()`` on the loop while the worker thread closes a
    recording (final fsync, content hash): recovery must leave a closing recording alone."""
    writer = spool.open_recording("live-gap", 16_000, "session", session_offset=0)
    writer.write(np.full(16_000, 1000, dtype=np.int16))
    hashing, go_on = threading.Event(), threading.Event()
    real_hash = spool.content_hash

    def slow_hash(recording_id: str, rate: int) -> str:
        hashing.set()
        go_on.wait(PATIENCE_SECONDS)
        return real_hash(recording_id, rate)

    spool.content_hash = slow_hash  # widen the window the close spends hashing
    failures: list[BaseException] = []

    def close() -> None:
        try:
            writer.close()
        except BaseException as exc:
            failures.append(exc)

    closer = threading.Thread(target=close)
    closer.start()
    assert hashing.wait(PATIENCE_SECONDS)
    recovered = spool.recover()
    go_on.set()
    closer.join(PATIENCE_SECONDS)
    assert recovered == [] and failures == []
    row = spool.get(writer.id)
    assert row.state == "ready" and row.data_bytes == 32_000
    assert row.content_hash == real_hash(writer.id, 16_000)
