"""Live transcription: one button press to stop, streamed to Universal Streaming v3.

:class:`LiveTranscriber` is the embeddable form (the README's example): an
audio source in, final turns out. :class:`LiveTranscription` is the session
runner under it and under the daemon: a thin asyncio layer over
:class:`appliance.protocol.streaming.StreamingSession` (the protocol logic,
delivery rule and account live there). This module owns
the I/O: it moves audio from the capture ring (native rate) through the
streaming resampler into a 16 kHz *mirror* ring addressed by session sample
index, fetches a fresh token for every connection, runs the WebSocket, logs
turns and hands them to its subscribers (the JSONL :class:`TranscriptWriter`,
the event bus, :meth:`LiveTranscriber.turns`; each optional), and hands audio
that could not be delivered to the spool, if it has one (origin ``live-gap``,
tagged with the session id and the sample offset where it starts).

Spool work (SQLite commits, fsync) runs on one worker thread per session, in
order, never on the event loop. Audio the spool cannot take (full, or no spool
at all) is moved from "spooled" to "lost" in the account, said once in the log
and on the event bus, and the session keeps streaming.

The mirror ring holds as much history as the capture ring, so a reconnect can
resume from any confirmed point inside it without re-running the resampler;
anything older is reported lost to the session (and counted), never skipped
silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlencode

import numpy as np
import websockets
from websockets.asyncio.client import ClientConnection

from appliance import events as ev
from appliance.audio.resample import STT_RATE, Resampler
from appliance.audio.ring import RingBuffer, wake_loop
from appliance.cloud.tokens import (
    TokenError,
    TokenSource,
)
from appliance.config import (
    Config,
    EndpointsConfig,
    LiveConfig,
    ReconnectConfig,
    live_tuning,
    streaming_limits,
)
from appliance.connection.tokens import note_connect_failure, note_connection_ended
from appliance.connection.websocket import CONNECT_ERRORS, failure_from, open_session_socket
from appliance.late import LIVE_GAP_ORIGIN, session_transcript_path
from appliance.logs import log_context
from appliance.protocol.streaming import (
    Action,
    EmitTurn,
    SendAudio,
    SessionAccount,
    Spool,
    StreamingLimits,
    StreamingSession,
    Turn,
)
from appliance.protocol.tuning import Tuning
from appliance.protocol.vocabulary import (
    Close,
    Connect,
    Finish,
    Notice,
    ReconnectAfter,
    SendJson,
)
from appliance.secrets import Secret, retire_secret
from appliance.session import RecordingSink, SpoolLike
from appliance.spool import SpoolFull

log = logging.getLogger(__name__)

#: The runner sleeps until there is work (a chunk complete, a message, a stop, a
#: protocol timer) instead of polling: the capture ring's writer wakes it when the
#: block that completes the next chunk lands.
#: Longest sleep when nothing is due (a safety net for anything not announced).
MAX_SLEEP_SECONDS = 1.0
#: A frame the socket could not take for this long means a dead path: drop it.
SEND_TIMEOUT_SECONDS = 3.0
#: RMS (int16 units, about -50 dBFS) below which 10 ms of audio counts as a pause.
QUIET_RMS = 100.0
#: Largest read from the capture ring per pump step (keeps each step short).
MAX_PUMP_SECONDS = 1.0
#: Audio waiting for the spool's worker thread beyond this is worth one warning (a slow disk).
SPOOL_BACKLOG_WARN_SECONDS = 30.0

__all__ = [
    "LiveOptions",
    "LiveTranscriber",
    "LiveTranscription",
    "SessionAccount",
    "TranscriptWriter",
    "Turn",
    "TurnSubscriber",
    "live_query",
]


def live_query(live: LiveConfig, tuning: Tuning | None = None) -> dict[str, str]:
    """The documented query parameters for ``/v3/ws`` from a :class:`LiveConfig`.

    ``tuning``: the key terms and turn silences as retuned mid-session (None: the
    configured ones), so a reconnect asks for what the person last set.
    """
    tuning = live_tuning(live) if tuning is None else tuning
    q: dict[str, str] = {
        "sample_rate": str(STT_RATE),
        "encoding": "pcm_s16le",
        "speech_model": live.speech_model,
        "format_turns": "true" if live.format_turns else "false",
    }
    if tuning.keyterms_prompt:
        q["keyterms_prompt"] = json.dumps(list(tuning.keyterms_prompt))  # ONE JSON-array param
    for name in ("min_turn_silence", "max_turn_silence"):
        silence = getattr(tuning, name)
        if silence is not None:
            q[name] = str(silence)
    for name in ("end_of_turn_confidence_threshold", "inactivity_timeout", "prompt", "domain"):
        value = getattr(live, name)
        if value is not None:
            q[name] = str(value)
    if live.speaker_labels:
        q["speaker_labels"] = "true"
    return q


def _default_streaming_url() -> str:
    return EndpointsConfig().resolved().streaming_url


@dataclass(frozen=True)
class LiveOptions:
    """What a live transcription is told: where the service is, and the ``live``/``reconnect``
    settings (the same sections as the daemon's config, with the same defaults)."""

    #: The Universal Streaming v3 WebSocket URL (``EndpointsConfig(...).resolved().streaming_url``).
    url: str = field(default_factory=_default_streaming_url)
    live: LiveConfig = field(default_factory=LiveConfig)
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig)

    @classmethod
    def from_config(cls, config: Config) -> LiveOptions:
        return cls(url=config.urls.streaming_url, live=config.live, reconnect=config.reconnect)

    def limits(self, history_seconds: float) -> StreamingLimits:
        return streaming_limits(self.live, self.reconnect, history_seconds)


#: Told every turn, partial and final, on the event loop, as it arrives.
TurnSubscriber = Callable[["LiveTranscription", Turn], None]


class TranscriptWriter:
    """A turn subscriber: each final turn as one JSON line in
    ``<state_dir>/transcripts/<session id>.jsonl`` (where ``late.py`` joins spooled gaps)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)

    def path(self, session_id: str) -> Path:
        return session_transcript_path(self.state_dir, session_id)

    def __call__(self, session: LiveTranscription, turn: Turn) -> None:
        if not turn.final:
            return
        record: dict[str, Any] = {
            "session_id": session.session_id,
            "turn_order": turn.order,
            "text": turn.text,
            "words": _words(turn),
            "time": time.time(),
            "session_start_time": session.start_wall,
            "server_session_id": turn.server_session_id,
            "formatted": turn.formatted,
        }
        if turn.speaker:
            record["speaker"] = turn.speaker
        path = self.path(session.session_id)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with open(fd, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def _words(turn: Turn) -> list[ev.Word]:
    return [
        {"text": w.text, "start_ms": w.start_ms, "end_ms": w.end_ms, "confidence": w.confidence}
        for w in turn.words
    ]


@dataclass
class _Event:
    kind: str  # opened | failed | message | closed (a connection's); retune | end_turn
    conn: int
    data: Any = None
    extra: Any = None


class _Mirror:
    """The session's 16 kHz stream: capture ring -> resampler -> mirror ring."""

    def __init__(self, ring: RingBuffer, start_index: int) -> None:
        self.ring = ring
        self.reader = ring.reader(start_index)
        self.start_index = start_index
        self.resampler = Resampler(ring.rate, STT_RATE)
        self.buffer = RingBuffer(STT_RATE, ring.history_seconds)
        self.lost_ranges: list[tuple[int, int]] = []
        self.capture_lost = 0
        self._max_read = int(ring.rate * MAX_PUMP_SECONDS)
        self.flushed = False

    @property
    def end(self) -> int:
        return self.buffer.write_index

    @property
    def held_back(self) -> int:
        """Samples captured and read but still inside the resampler (not yet at ``end``)."""
        return 0 if self.flushed else round(self.resampler.delay_samples)

    def pump(self, until: int | None = None) -> None:
        """Move captured audio (up to capture index ``until``) into the mirror."""
        while True:
            limit = self.ring.write_index if until is None else until
            want = min(self._max_read, limit - self.reader.position)
            if want <= 0:
                return
            result = self.reader.read(want)
            if result.lost:
                # The capture ring overwrote what we had not read: keep the index
                # arithmetic straight with silence, and report the range lost.
                self.capture_lost += result.lost
                n = round(result.lost * STT_RATE / self.ring.rate)
                if n:
                    start = self.end
                    self._write(np.zeros(n, dtype=np.int16))
                    self.lost_ranges.append((start, start + n))
                self.resampler.reset()
            if len(result.samples):
                self._write(self.resampler.process(result.samples))
            if len(result.samples) < want and not result.lost:
                return

    def flush(self) -> None:
        if not self.flushed:
            self.flushed = True
            self._write(self.resampler.flush())

    def _write(self, samples: np.ndarray) -> None:
        if len(samples):
            self.buffer.write(samples, time.monotonic())

    def read(self, start: int, end: int) -> tuple[np.ndarray, int]:
        """Samples ``[start, end)`` with anything overwritten as leading zeros; (samples, lost)."""
        # (The ring reads on from its oldest sample when ``start`` is older: ask only for
        # what lies inside the range.)
        first = max(start, self.buffer.oldest_index)
        result = self.buffer.read(first, max(0, end - first))
        if result.start == start and len(result.samples) == end - start:
            return result.samples, 0
        out = np.zeros(end - start, dtype=np.int16)
        out[result.start - start : result.end - start] = result.samples
        return out, result.start - start


@dataclass(frozen=True)
class _Kept:
    """What the spool did with one range: ``kept`` of ``offered`` samples were written."""

    start: int  # session offset of the range
    offered: int
    kept: int
    opened: str | None = None  # id of a recording this range started
    failure: str | None = None  # why not all of it was kept


class _SpoolKeeper:
    """Writes a session's undelivered audio to the spool on ONE worker thread, in order.

    Opening a recording commits SQLite, and writes and closes fsync: on the event
    loop they would stall the audio pump, the WebSocket and the watchdog. Every
    job goes to a single-thread executor, so ranges land in stream order and one
    writer is never used by two threads. ``keep`` returns at once; ``on_result``
    runs on the loop with each range's outcome (in order), so the session's
    account is only ever touched there.

    A range that does not continue the open recording (a gap, or a failure before
    it) starts a new recording positioned by its ``session_offset``, so every
    recording is contiguous stream audio.
    """

    def __init__(
        self,
        spool: SpoolLike,
        session_id: str,
        start_wall: float,
        on_result: Callable[[_Kept], None],
    ) -> None:
        self.spool = spool
        self.session_id = session_id
        self.start_wall = start_wall
        self.on_result = on_result
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-spool")
        self._pending: set[asyncio.Future[Any]] = set()
        self.queued_samples = 0  # handed over, not yet written (loop side)
        self._backlog_warned = False
        # Worker-thread state only.
        self._writer: RecordingSink | None = None
        self._writer_end: int | None = None

    # -- loop side -------------------------------------------------------------

    def keep(self, start: int, samples: np.ndarray) -> None:
        """Queue stream samples starting at session index ``start`` (``samples`` is ours)."""
        self.queued_samples += len(samples)
        if not self._backlog_warned and self.queued_samples > SPOOL_BACKLOG_WARN_SECONDS * STT_RATE:
            self._backlog_warned = True
            log.warning(
                "spool writes are %.0f s behind (slow storage); the audio is held in memory",
                self.queued_samples / STT_RATE,
            )
        self._submit(self._write, start, samples)

    async def close(self) -> None:
        """Finish the open recording and wait for every queued job (they run even if cancelled)."""
        self._submit(self._finish)
        try:
            while self._pending:
                await asyncio.wait(set(self._pending))
        finally:
            self._executor.shutdown(wait=False)

    def _submit(self, fn: Callable[..., _Kept | None], *args: Any) -> None:
        future = self._loop.run_in_executor(self._executor, fn, *args)
        self._pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: asyncio.Future[Any]) -> None:
        self._pending.discard(future)
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:  # _write catches everything; this is a bug, say so
            log.error("spool worker failed: %r", exc)
            return
        result = future.result()
        if result is not None:
            self.queued_samples -= result.offered
            self.on_result(result)

    # -- worker thread -----------------------------------------------------------

    def _write(self, start: int, samples: np.ndarray) -> _Kept:
        opened = None
        writer = self._writer
        before = 0
        try:
            if writer is None or self._writer_end != start:
                self._finish()
                writer = None
                writer = self.spool.open_recording(
                    LIVE_GAP_ORIGIN,
                    STT_RATE,
                    self.session_id,
                    self.start_wall + start / STT_RATE,
                    session_offset=start,
                )
                self._writer, self._writer_end = writer, start
                opened = writer.id
            before = writer.samples_written
            writer.write(samples)
            self._writer_end = start + len(samples)
            return _Kept(start, len(samples), len(samples), opened)
        except Exception as exc:  # SpoolFull above all; anything else must not end the session
            kept = 0
            if writer is not None:
                kept = max(0, writer.samples_written - before)
                if kept < len(samples):
                    with contextlib.suppress(Exception):
                        writer.note_lost(len(samples) - kept)
            # End this recording here: what comes next starts a new, contiguous one.
            self._finish()
            if kept == 0:
                opened = None  # a recording that got nothing is removed when it closes
            return _Kept(start, len(samples), kept, opened, _describe(exc))

    def _finish(self) -> None:
        writer, self._writer, self._writer_end = self._writer, None, None
        if writer is not None:
            try:
                writer.close()
            except Exception as exc:  # the audio written so far is durable; recovery finishes it
                log.error("closing spooled recording failed: %s", _describe(exc))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SpoolFull):
        return f"spool full: {exc}"
    return f"spool error: {type(exc).__name__}: {exc}"


class LiveTranscription:
    """Runs one live transcription session from a capture index until stopped.

    Its collaborators are optional: without a ``spool`` audio that could not be
    streamed is counted lost; without ``events`` nothing is published; turns go
    to each of ``subscribers`` (a :class:`TranscriptWriter` keeps the JSONL).
    """

    def __init__(
        self,
        options: LiveOptions,
        ring: RingBuffer,
        tokens: TokenSource,
        *,
        spool: SpoolLike | None = None,
        events: ev.EventBus | None = None,
        subscribers: Sequence[TurnSubscriber] = (),
        limits: StreamingLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.options = options
        self.ring = ring
        self.tokens = tokens
        self.spool = spool
        self.events = events if events is not None else ev.EventBus()  # nobody listens
        self.subscribers = list(subscribers)
        self.limits = limits or options.limits(ring.history_seconds)
        self.clock = clock
        self.session_id = uuid.uuid4().hex[:16]
        #: Wall-clock time of the session's first sample (set when it runs).
        self.start_wall = time.time()
        self.spool_recordings: list[str] = []
        self.turns: list[Turn] = []
        self.unkept_samples = 0  # handed to the spool but not kept (full, absent): lost
        self._spool_trouble: str | None = None  # why audio is not being kept right now
        self._stop_requested = False
        self._stop_reason = "stop requested"
        self._stop_index: int | None = None  # a stop's last ring index (None: where the ring is)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._sleep_timer: asyncio.TimerHandle | None = None
        self.wakeups = 0  # loop iterations (one per chunk in steady state)
        #: The key terms and turn silences as last asked for (config, then retunes).
        self.tuning = live_tuning(options.live)
        self._controls: list[_Event] = []  # retunes and turn ends for the run loop

    @classmethod
    def from_config(
        cls,
        config: Config,
        ring: RingBuffer,
        tokens: TokenSource,
        spool: SpoolLike | None,
        events: ev.EventBus,
        state_dir: Path,
        *,
        limits: StreamingLimits | None = None,
    ) -> LiveTranscription:
        """The daemon's session: spool, event bus and the JSONL under ``state_dir``."""
        return cls(
            LiveOptions.from_config(config),
            ring,
            tokens,
            spool=spool,
            events=events,
            subscribers=[TranscriptWriter(state_dir)],
            limits=limits,
        )

    @property
    def transcript_path(self) -> Path | None:
        """The session's JSONL file, if a :class:`TranscriptWriter` keeps one."""
        for subscriber in self.subscribers:
            if isinstance(subscriber, TranscriptWriter):
                return subscriber.path(self.session_id)
        return None

    # -------------------------------------------------------------- control

    def request_stop(self, reason: str = "stop requested", *, end_index: int | None = None) -> None:
        """Stop the session (safe from any thread); ``run`` then drains and returns.

        ``end_index``: the session's audio ends at this ring index at the latest
        (a mute began there), not where the ring is when the loop sees the stop.
        """
        self._stop_reason = reason if end_index is None else "muted"
        self._stop_index = end_index
        self._stop_requested = True
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    def interrupt(self) -> None:
        """Nothing to interrupt: live transcription never talks."""

    def retune(
        self,
        *,
        keyterms_prompt: Sequence[str] | None = None,
        min_turn_silence: int | None = None,
        max_turn_silence: int | None = None,
    ) -> Tuning:
        """Change key terms or turn silences mid-session, without reconnecting (on the loop).

        None keeps a value. Raises ValueError (nothing changes) for what the
        service would refuse; returns the tuning now asked for. The run loop
        sends it as ``UpdateConfiguration``, and every later connection asks for it.
        """
        tuning = self.tuning.merged(
            keyterms_prompt=None if keyterms_prompt is None else tuple(keyterms_prompt),
            min_turn_silence=min_turn_silence,
            max_turn_silence=max_turn_silence,
        )
        problems = tuning.problems()
        if problems:
            raise ValueError("; ".join(problems))
        self.tuning = tuning
        self._control(_Event("retune", 0, tuning))
        return tuning

    def end_turn(self) -> None:
        """Close the open turn at once (``ForceEndpoint``), e.g. a speaker has finished."""
        self._control(_Event("end_turn", 0))

    def _control(self, event: _Event) -> None:
        self._controls.append(event)
        self._wake_up()

    # ----------------------------------------------------------------- run

    async def run(self, start_index: int) -> SessionAccount:
        """Stream from capture index ``start_index`` until stopped; return the account."""
        with log_context(SESSION_ID=self.session_id, MODE="live"):
            return await self._run(start_index)

    async def _run(self, start_index: int) -> SessionAccount:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._wake_from_writer = wake_loop(self._loop, self._wake.set)
        live = self.options.live
        self.machine = machine = StreamingSession(
            self.limits,
            format_turns=live.format_turns,
            quiet_point=self._quiet_point,
            tuning=self.tuning,
        )
        self._mirror = mirror = _Mirror(self.ring, start_index)
        self._queue: asyncio.Queue[_Event] = asyncio.Queue()
        self._conn_id = 0
        self._ws: ClientConnection | None = None
        self._conn_task: asyncio.Task[None] | None = None
        self.start_wall = time.time() - max(0, self.ring.write_index - start_index) / self.ring.rate
        self._keeper = (
            _SpoolKeeper(self.spool, self.session_id, self.start_wall, self._on_kept)
            if self.spool is not None
            else None
        )
        self._last_speech = self.clock()
        started = ev.SessionPhase(phase="started", mode="live", session_id=self.session_id)
        self.events.publish(started)
        log.info("live session %s started", self.session_id)
        account: SessionAccount | None = None
        stopped = False
        max_samples = int(live.max_session_seconds * self.ring.rate)
        try:
            account = await self._execute(machine.start(self.clock()))
            while account is None:
                await self._wait_for_work(stopped, start_index + max_samples)
                now = self.clock()
                actions: list[Action] = []
                while not self._queue.empty():
                    actions += self._dispatch(self._queue.get_nowait(), now)
                controls, self._controls = self._controls, []
                for control in controls:
                    actions += self._dispatch_control(control, now)
                if not stopped:
                    reason = self._stop_condition(now, max_samples, start_index)
                    if reason:
                        stopped = True
                        stop_at = min(self.ring.write_index, start_index + max_samples)
                        if self._stop_index is not None:
                            stop_at = max(start_index, min(stop_at, self._stop_index))
                        mirror.pump(until=stop_at)
                        mirror.flush()
                        self._report_lost()
                        actions += machine.stop(now, mirror.end, reason)
                    else:
                        mirror.pump()
                        self._report_lost()
                        actions += machine.audio(now, mirror.end, mirror.held_back)
                else:
                    actions += machine.tick(now)
                account = await self._execute(actions)
        finally:
            await self._teardown()
        account.spool_recordings = list(self.spool_recordings)
        log.log(
            logging.ERROR if account.lost_samples else logging.INFO,
            "live session %s ended: %s",
            self.session_id,
            account.summary(),
        )
        if mirror.capture_lost:
            log.warning(
                "capture ring overwrote %d samples before they were read", mirror.capture_lost
            )
        self.events.publish(
            ev.SessionPhase(
                phase="ended",
                mode="live",
                session_id=self.session_id,
                account=account.as_dict(),
            )
        )
        self.events.publish(ev.StateChanged(state="idle", mode="live"))
        return account

    def _stop_condition(self, now: float, max_samples: int, start_index: int) -> str | None:
        if self._stop_requested:
            return self._stop_reason
        if self.ring.write_index - start_index >= max_samples:
            return "maximum session length"
        timeout = self.options.live.silence_timeout_seconds
        if timeout is not None and now - self._last_speech >= timeout:
            return "silence timeout"
        return None

    async def _wait_for_work(self, stopped: bool, max_index: int) -> None:
        """Sleep until there is something to do.

        That is: a connection event, a stop request, a protocol timer of the
        session, the silence timeout, or (while capturing) the capture block that
        completes the next chunk: the ring's writer wakes us when it lands. So the
        steady state is one wake-up per chunk, sent as soon as it is complete.
        """
        wake, loop = self._wake, self._loop
        if wake is None or loop is None:
            return
        wake.clear()
        if not self._queue.empty() or self._controls or (self._stop_requested and not stopped):
            return
        self.wakeups += 1
        now = self.clock()
        due = now + MAX_SLEEP_SECONDS
        timer = self.machine.next_timer()
        if timer is not None:
            due = min(due, timer)
        cancel_audio = None
        if not stopped:
            timeout = self.options.live.silence_timeout_seconds
            if timeout is not None:
                due = min(due, self._last_speech + timeout)
            wanted = self.machine.audio_wanted()
            if wanted is not None:
                target = self._capture_index_for(wanted, max_index)
                if self.ring.write_index >= target:
                    return
                cancel_audio = self.ring.call_when_written(target, self._wake_from_writer)
        delay = due - now
        if delay <= 0:
            if cancel_audio is not None:
                cancel_audio()
            return
        self._arm_sleep_timer(loop, delay)
        try:
            await wake.wait()
        finally:
            if cancel_audio is not None:
                cancel_audio()

    def _arm_sleep_timer(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        """Have the loop wake us in ``delay`` s, keeping the armed timer when it will do.

        Making and cancelling a timer on every wait left a cancelled handle per
        frame in the loop's heap until its time came.  The armed timer is kept
        while it is still to fire, no later than needed and at most half a
        maximum sleep early (an early wake only recomputes the sleep).
        """
        now = loop.time()
        when = now + delay
        timer = self._sleep_timer
        if timer is not None and not timer.cancelled():
            if now < timer.when() <= when and timer.when() >= when - MAX_SLEEP_SECONDS / 2:
                return
            timer.cancel()
        assert self._wake is not None
        self._sleep_timer = loop.call_at(when, self._wake.set)

    def _capture_index_for(self, wanted: int, max_index: int) -> int:
        """The capture index whose arrival makes stream index ``wanted`` available."""
        mirror = self._mirror
        need = wanted - mirror.end - mirror.held_back
        step = max(1, math.ceil(need * self.ring.rate / STT_RATE))
        return min(max_index, mirror.reader.position + step)

    def _quiet_point(self, start: int, end: int) -> int:
        """The end of the latest quiet 10 ms window in ``[start, end]`` (within the last second).

        Spooled ranges end there, so a word is never split between the spool and the live stream.
        """
        window = STT_RATE // 100
        lowest = max(start, end - STT_RATE)
        buf = self._mirror.buffer
        pos = end
        while pos - window >= lowest and pos - window >= buf.oldest_index:
            chunk = buf.read(pos - window, window).samples.astype(np.float32)
            if len(chunk) == window and float(np.sqrt(np.mean(chunk * chunk))) < QUIET_RMS:
                return pos
            pos -= window
        return end

    def _report_lost(self) -> None:
        mirror = self._mirror
        for start, end in mirror.lost_ranges:
            self.machine.lost(start, end)
        mirror.lost_ranges.clear()
        oldest = mirror.buffer.oldest_index
        if oldest > self.machine.confirmed:
            self.machine.lost(self.machine.confirmed, oldest)

    # ------------------------------------------------------------ dispatch

    def _dispatch(self, event: _Event, now: float) -> list[Action]:
        if event.conn != self._conn_id:
            return []  # from a connection we already gave up on
        m = self.machine
        if event.kind == "opened":
            # Audio flows from here: the LED, the page and integrations say so.
            self.events.publish(ev.StateChanged(state="listening", mode="live"))
            return m.opened(now)
        if event.kind == "failed":
            return m.connect_failed(now, event.data)
        if event.kind == "message":
            return m.message(now, event.data)
        if event.kind == "closed":
            self._ws = None
            return m.closed(now, event.data, event.extra or "")
        return []

    def _dispatch_control(self, event: _Event, now: float) -> list[Action]:
        if event.kind == "retune":
            return self.machine.retune(now, event.data)
        return self.machine.end_turn(now)

    async def _execute(self, actions: list[Action]) -> SessionAccount | None:
        finished: SessionAccount | None = None
        for action in actions:
            if isinstance(action, SendAudio):
                await self._send_audio(action)
            elif isinstance(action, SendJson):
                await self._send(json.dumps(action.message))
            elif isinstance(action, EmitTurn):
                self._emit_turn(action.turn)
            elif isinstance(action, Connect):
                self._start_connection()
            elif isinstance(action, Close):
                self._close(action)
            elif isinstance(action, Spool):
                self._spool(action)
            elif isinstance(action, ReconnectAfter):
                state: ev.State = "error" if action.auth_failure else "offline"
                self.events.publish(ev.StateChanged(state=state, mode="live", detail=action.reason))
                if action.auth_failure:
                    self.events.publish(ev.ErrorReported(message=action.reason, where="live"))
            elif isinstance(action, Notice):
                log.log(action.level, "%s", action.message)
            elif isinstance(action, Finish):
                finished = self.machine.account
        return finished

    # ------------------------------------------------------------ outputs

    async def _send_audio(self, action: SendAudio) -> None:
        samples, lost = self._mirror.read(action.start, action.end)
        if lost:
            self.machine.lost(action.start, action.start + lost)
        if action.pad:
            samples = np.concatenate([samples, np.zeros(action.pad, dtype=np.int16)])
        await self._send(samples.astype("<i2", copy=False).tobytes())

    async def _send(self, data: str | bytes) -> None:
        ws = self._ws
        if ws is None:
            return
        try:
            if _send_cannot_stall(ws, len(data)):
                await ws.send(data)
            else:
                async with asyncio.timeout(SEND_TIMEOUT_SECONDS):  # no task, as wait_for has
                    await ws.send(data)
        except TimeoutError:
            log.warning("send stalled for %.0f s; dropping the connection", SEND_TIMEOUT_SECONDS)
            ws.transport.abort()
        except websockets.ConnectionClosed:
            pass  # the receive side reports the close

    def _emit_turn(self, turn: Turn) -> None:
        self._last_speech = self.clock()
        kind = ev.TurnFinal if turn.final else ev.TurnPartial
        self.events.publish(
            kind(
                session_id=self.session_id,
                turn_order=turn.order,
                text=turn.text,
                words=tuple(_words(turn)),
                speaker=turn.speaker,
            )
        )
        if turn.final:
            self.turns.append(turn)
            log.info("turn %d: %s", turn.order, turn.text)
        for subscriber in self.subscribers:
            subscriber(self, turn)

    def _spool(self, action: Spool) -> None:
        """Hand ``[start, end)`` to the spool's worker thread; never blocks the loop."""
        samples, lost = self._mirror.read(action.start, action.end)
        if lost:
            # Already counted lost by the session (reported before it chose to spool).
            log.error("%d samples were overwritten before they could be kept", lost)
        start, samples = action.start + lost, samples[lost:]
        if not len(samples):
            return
        if self._keeper is None:
            self._on_kept(_Kept(start, len(samples), 0, failure="no spool configured"))
            return
        self._keeper.keep(start, samples)

    def _on_kept(self, result: _Kept) -> None:
        """On the loop: settle the account for one spooled range, and say so once if not kept."""
        if result.opened:
            self.spool_recordings.append(result.opened)
        unkept = result.offered - result.kept
        if unkept <= 0:
            if self._spool_trouble is not None:
                self._spool_trouble = None
                log.warning(
                    "the spool keeps undelivered audio again (%.2f s lost meanwhile)",
                    self.unkept_samples / STT_RATE,
                )
            return
        self.machine.account.spool_failed(unkept)
        self.unkept_samples += unkept
        why = result.failure or "not kept"
        if self._spool_trouble is None:
            self._spool_trouble = why
            message = (
                f"undelivered audio cannot be kept ({why}): it is counted as lost; "
                "live streaming goes on"
            )
            log.error("%s", message)
            self.events.publish(ev.ErrorReported(message=message, where="live"))
            self.events.publish(ev.StateChanged(state="error", mode="live", detail=why))

    # ---------------------------------------------------------- connection

    def _start_connection(self) -> None:
        # Each attempt, the first and every reconnect: "connecting" until it opens.
        self.events.publish(ev.StateChanged(state="connecting", mode="live"))
        self._abandon_connection()
        self._conn_id += 1
        self._conn_task = asyncio.get_running_loop().create_task(
            self._connection(self._conn_id), name=f"live-conn-{self._conn_id}"
        )

    def _abandon_connection(self) -> None:
        task, self._conn_task = self._conn_task, None
        if task is not None and not task.done():
            task.cancel()
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.transport.abort()

    def _close(self, action: Close) -> None:
        ws = self._ws
        if ws is None:
            # Not open (yet): report it closed so the session moves on.
            self._post(_Event("closed", self._conn_id, action.code, action.reason))
            self._abandon_connection()
            return

        async def close() -> None:
            with contextlib.suppress(Exception):
                await ws.close(action.code, action.reason)

        asyncio.get_running_loop().create_task(close())

    def _post(self, event: _Event) -> None:
        self._queue.put_nowait(event)
        self._wake_up()

    async def _connection(self, conn: int) -> None:
        try:
            token = await self.tokens.fetch()
        except CONNECT_ERRORS as exc:
            failure = failure_from(exc)
            note_connect_failure(self.tokens, exc, failure.retry_after)
            self._post(_Event("failed", conn, failure))
            return
        try:
            await self._connection_with(conn, token)
        finally:
            note_connection_ended(self.tokens)  # however it ended: the keeper may ask again

    async def _connection_with(self, conn: int, token: Secret) -> None:
        put = self._post
        try:
            fingerprint = hashlib.sha256(token.reveal().encode()).hexdigest()
            if not self.machine.note_token(fingerprint):
                raise TokenError("the token source handed out a token seen before")
            query = live_query(self.options.live, self.machine.connection_tuning())
            query["token"] = token.reveal()
            url = f"{self.options.url}?{urlencode(query)}"
            ws = await open_session_socket(url, tls_for=self.options.url)
        except CONNECT_ERRORS as exc:
            failure = failure_from(exc)
            note_connect_failure(self.tokens, exc, failure.retry_after)
            put(_Event("failed", conn, failure))
            return
        retire_secret(token)  # the upgrade redeemed it: single-use, it opens nothing now
        if conn != self._conn_id:
            ws.transport.abort()
            return
        self._ws = ws
        put(_Event("opened", conn))
        try:
            async for message in ws:
                if isinstance(message, str):
                    put(_Event("message", conn, message))
        except websockets.ConnectionClosed:
            pass
        code = ws.close_code
        reason = ws.close_reason or ""
        put(_Event("closed", conn, None if code in (None, 1006) else code, reason))

    def _wake_up(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _teardown(self) -> None:
        if self._sleep_timer is not None:
            self._sleep_timer.cancel()
        self._abandon_connection()
        if self._keeper is not None:
            await self._keeper.close()


class AudioSource(Protocol):
    """Anything that captures into a ring: ``AudioCapture`` (a microphone), ``FileSource``."""

    @property
    def ring(self) -> RingBuffer: ...


class LiveTranscriber:
    """Live transcription of an audio source, for embedding; final turns as they come.

    ::

        async with LiveTranscriber(options, tokens, audio) as t:
            async for turn in t.turns():
                print(turn.text)

    ``audio`` is a :class:`RingBuffer` or a source with one (``AudioCapture``,
    ``FileSource``); streaming starts from ``start_index`` (default: the
    ring's newest sample when the block is entered). ``turns()`` ends once the
    session has ended: after :meth:`stop` (from any thread) or a limit in
    ``options.live`` (``max_session_seconds``, ``silence_timeout_seconds``).
    Leaving the block stops the session and waits for its account.
    ``spool``, ``events`` and ``subscribers`` are optional, as in
    :class:`LiveTranscription`; ``partials=True`` also yields partial turns.
    """

    def __init__(
        self,
        options: LiveOptions,
        tokens: TokenSource,
        audio: RingBuffer | AudioSource,
        *,
        start_index: int | None = None,
        partials: bool = False,
        spool: SpoolLike | None = None,
        events: ev.EventBus | None = None,
        subscribers: Sequence[TurnSubscriber] = (),
    ) -> None:
        self.options = options
        self.tokens = tokens
        self.audio = audio
        self.start_index = start_index
        self.partials = partials
        self._collaborators = (spool, events, list(subscribers))
        self._queue: asyncio.Queue[Turn | None] = asyncio.Queue()
        self._task: asyncio.Task[SessionAccount] | None = None
        self.session: LiveTranscription | None = None
        #: Where every sample went, once the session has ended.
        self.account: SessionAccount | None = None

    async def __aenter__(self) -> LiveTranscriber:
        ring = self.audio if isinstance(self.audio, RingBuffer) else self.audio.ring
        spool, events, subscribers = self._collaborators
        self.session = session = LiveTranscription(
            self.options,
            ring,
            self.tokens,
            spool=spool,
            events=events,
            subscribers=[*subscribers, self._on_turn],
        )
        start = ring.write_index if self.start_index is None else self.start_index
        self._task = task = asyncio.get_running_loop().create_task(
            session.run(start), name=f"live-{session.session_id}"
        )
        task.add_done_callback(lambda _: self._queue.put_nowait(None))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._task is not None:
            self.account = await self._task

    def stop(self) -> None:
        """End the session cleanly (safe from any thread); ``turns()`` then runs out."""
        if self.session is not None:
            self.session.request_stop()

    async def turns(self) -> AsyncIterator[Turn]:
        """Each final turn (and partial, with ``partials=True``) until the session has ended."""
        while (turn := await self._queue.get()) is not None:
            yield turn
        self._queue.put_nowait(None)  # a second iteration ends too
        if self._task is not None and self._task.done() and not self._task.cancelled():
            self._task.result()  # the session's failure, if it failed

    def _on_turn(self, session: LiveTranscription, turn: Turn) -> None:
        if turn.final or self.partials:
            self._queue.put_nowait(turn)


def _send_cannot_stall(ws: ClientConnection, size: int) -> bool:
    """True when sending ``size`` bytes on ``ws`` completes without waiting.

    The WebSocket waits only while its transport's buffer is above the
    high-water mark (flow control); below the low-water mark after this write,
    it cannot be.  Then the frame needs no timeout (a timer per frame, most of
    a live session's timers).  A frame's header adds at most 14 bytes.
    """
    transport = ws.transport
    low, _high = transport.get_write_buffer_limits()
    return transport.get_write_buffer_size() + size + 14 <= low
