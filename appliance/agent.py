"""Voice agent mode: a push-button spoken conversation on the Voice Agent API.

A thin asyncio layer over the sans-I/O :class:`appliance.protocol.agent.AgentProtocol`:
it fetches a fresh token for every connection, pumps microphone audio from the
capture ring (resampled to 24 kHz) into ``input.audio`` messages, writes
``reply.audio`` into the playback stream, runs tools, keeps the conversation's
transcript, and reconnects (resuming the session when it can) with backoff.

Who calls what:

* the daemon: ``await VoiceAgentConversation(...).run(start_index)``; from any
  thread ``request_stop()`` (a press: ``session.end``, bounded wait for
  ``session.ended``) and ``interrupt()`` (a press while the agent speaks:
  silence the speaker at once, keep listening);
* ``on_notice("new_conversation")`` tells the daemon to play an earcon when a
  drop could not be resumed and the agent lost the context.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, ClassVar, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import websockets
from websockets.asyncio.client import ClientConnection

from appliance import events as ev
from appliance.audio.playback import BufferFull
from appliance.audio.resample import AGENT_RATE, Resampler
from appliance.audio.ring import ReadResult, RingBuffer
from appliance.cloud.agent_session import session_config
from appliance.cloud.tokens import TokenSource
from appliance.config import Config, agent_limits, reconnect_limits
from appliance.connection.tokens import note_connect_failure, note_connection_ended
from appliance.connection.websocket import (
    CONNECT_ERRORS,
    DEFAULT_WEBSOCKET_LIMITS,
    WebSocketLimits,
    failure_from,
    open_session_socket,
)
from appliance.logs import log_context
from appliance.protocol import agent as proto
from appliance.protocol.account import Account, AccountMode
from appliance.protocol.failures import Failure
from appliance.protocol.pacer import Pacer, PacingLimits
from appliance.protocol.vocabulary import (
    Close,
    Connect,
    Finish,
    Notice,
    ReconnectAfter,
    SendJson,
)
from appliance.secrets import Secret, redact, retire_secret
from appliance.session import SpoolLike
from appliance.tools import ToolRunner

log = logging.getLogger(__name__)

__all__ = ["ConversationAccount", "ConversationLimits", "PlaybackSink", "VoiceAgentConversation"]

NOTICE_NEW_CONVERSATION = "new_conversation"


class PlaybackSink(Protocol):
    """What the conversation needs from the speaker (24 kHz PCM16 mono).

    ``appliance.audio.playback.AudioPlayback`` is one.  What it offers beyond
    these is used when present (the protocols below): ``idle`` (everything
    written has been played; absent = always drained), ``quiet(tail)`` (and has
    stopped sounding), ``end_of_stream()`` (a reply ended: play what is queued
    even if it is shorter than the jitter buffer) and ``write_own_sound`` (half
    duplex by capture time).
    """

    def write(self, pcm: bytes) -> None:
        """Queue audio; must not block the event loop."""

    def flush(self) -> None:
        """Drop everything queued, at once."""


@runtime_checkable
class _Drains(Protocol):
    @property
    def idle(self) -> bool: ...


@runtime_checkable
class _SoundsOut(Protocol):
    def quiet(self, tail: float = ...) -> bool: ...


@runtime_checkable
class _EndsStream(Protocol):
    def end_of_stream(self) -> None: ...


@runtime_checkable
class _NotesOwnSound(Protocol):
    def write_own_sound(self, pcm: bytes) -> None: ...


@dataclasses.dataclass(frozen=True)
class ConversationLimits:
    """Timing limits of the runner (the protocol's own come from ``agent:``)."""

    #: While a finished reply drains from the speaker, how often to look whether it has
    #: (the microphone is unmuted then); otherwise the runner sleeps until the protocol's
    #: next deadline, at most ``max_tick_seconds``.
    tick_seconds: float = 0.02
    max_tick_seconds: float = 1.0
    #: Bounds on the WebSocket (reply audio chunks are a few kB; its keepalive
    #: declares a silent server dead).
    websocket: WebSocketLimits = DEFAULT_WEBSOCKET_LIMITS
    #: Audio never leads wall time since ``session.ready`` by more than this (one
    #: frame): a backlog (pre-roll, audio captured while reconnecting) is paced like
    #: live audio, so the service's real-time check never fires.
    max_lead_seconds: float = 1.0
    #: Longest wait for microphone audio before the pump looks at the session again
    #: (the capture ring's writer wakes it as soon as a chunk is in).
    audio_wait_seconds: float = 0.25


@dataclasses.dataclass(kw_only=True)
class ConversationAccount(Account):
    """What happened in one conversation (ring samples are at the capture rate).

    ``captured == sent + spooled + skipped + lost``: every capture sample from
    ``start_index`` to ``end_index`` was sent (the account's ``delivered``;
    ``muted`` of them as silence: in half duplex, or the device's own sounds),
    spooled or skipped (audio of a lost session's context, listed in
    ``skipped_ranges``: kept in the spool, origin ``agent``, when there is
    one), or lost (overwritten in the ring before it could be sent or kept).
    """

    mode: AccountMode = "agent"
    start_index: int = 0
    end_index: int = 0
    muted_samples: int = 0
    skipped_ranges: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    session_ids: list[str] = dataclasses.field(default_factory=list)
    connections: int = 0
    resumes: int = 0
    new_conversations: int = 0
    user_turns: int = 0
    agent_replies: int = 0
    interrupted_replies: int = 0
    tool_calls: int = 0
    garbled_messages: int = 0
    #: Reply audio dropped because the playback buffer was full (a reply over its length).
    dropped_reply_seconds: float = 0.0
    error: str | None = None
    transcript_path: str | None = None

    delivered_as: ClassVar[str] = "sent"
    delivered_key: ClassVar[str | None] = "sent_samples"

    @property
    def sent_samples(self) -> int:
        """Sent to the agent (muted parts as silence): the agent's delivered audio."""
        return self.delivered_samples

    @sent_samples.setter
    def sent_samples(self, value: int) -> None:
        self.delivered_samples = value

    def details(self) -> str:
        return (
            f"{self.user_turns} user turn(s), {self.agent_replies} repl(ies), "
            f"{self.connections} connection(s), {self.resumes} resumed, "
            f"{self.new_conversations} new conversation(s)"
        )


class VoiceAgentConversation:
    """One push-button conversation with the voice agent, across reconnects."""

    def __init__(
        self,
        config: Config,
        ring: RingBuffer,
        playback: PlaybackSink,
        tokens: TokenSource,
        events: ev.EventBus,
        state_dir: Path,
        *,
        on_notice: Callable[[str], None] | None = None,
        tools: ToolRunner | None = None,
        limits: ConversationLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
        spool: SpoolLike | None = None,
    ) -> None:
        self.config = config
        #: Where skipped audio (the user's words while a lost conversation could not hear them)
        #: is kept, origin ``agent``; without one it is only counted as skipped.
        self.spool = spool
        self._keeping: set[asyncio.Task[None]] = set()
        self._started_wall = 0.0  # wall-clock time of the conversation's first sample
        self.ring = ring
        self.playback = playback
        self.tokens = tokens
        self.events = events
        self.state_dir = Path(state_dir)
        self.on_notice = on_notice
        self.limits = limits or ConversationLimits()
        self.clock = clock
        agent = config.agent
        self.tools = tools if tools is not None else ToolRunner(agent.tools)
        self.url = config.urls.agent_url
        # Half duplex by capture time when the speaker notes its sound for the ring
        # (wiring links them): the ring silences what was captured while a reply sounded,
        # so the pre-roll, sent while the greeting plays, is kept.  Otherwise the protocol
        # mutes whatever is sent while the agent speaks.
        self._mute_by_capture = (
            agent.echo == "half_duplex"
            and ring.own_sound is not None
            and isinstance(playback, _NotesOwnSound)
        )
        self.protocol = proto.AgentProtocol(
            session_config(agent, self.tools.definitions()),
            echo="full_duplex" if self._mute_by_capture else agent.echo,
            limits=agent_limits(agent),
            reconnect=reconnect_limits(config.reconnect),
        )
        self.account = ConversationAccount(rate=ring.rate)
        self._chunk_samples = max(1, ring.rate * agent.chunk_ms // 1000)
        self._resampler = Resampler(ring.rate, AGENT_RATE)
        self._ready_at = 0.0  # when the current connection's session.ready arrived
        self._connect_due: Connect | None = None  # the protocol asked for a connection
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wake = asyncio.Event()
        self._stop_requested = False
        self._pumping = False  # the audio pump runs (a stop is then its to carry out)
        self._ws: ClientConnection | None = None
        self._outbox: asyncio.Queue[dict[str, Any]] | None = None
        self._ready = asyncio.Event()
        self._replan = asyncio.Event()  # set when the protocol changed: re-plan the timers
        self._tool_tasks: set[asyncio.Task[None]] = set()
        self._transcript: IO[str] | None = None
        self._position = 0  # next ring index to send
        self._stop_index: int | None = None  # no audio from here on is sent (a mute began)
        self._reply_started_at: float | None = None

    # ------------------------------------------------------------ public API

    @property
    def session_id(self) -> str | None:
        """The service's id of the current session (None before the first ``session.ready``)."""
        return self.protocol.session_id

    @property
    def speaking(self) -> bool:
        """The agent is audible right now (a press should interrupt rather than stop)."""
        return self.protocol.speaking

    def request_stop(self, *, end_index: int | None = None) -> None:
        """End the conversation politely (``session.end``); safe from any thread.

        ``end_index``: no microphone audio from this ring index on is sent (a mute began).
        """
        if end_index is not None:
            self._stop_index = end_index
        self._call_on_loop(self._stop_now)

    def interrupt(self) -> None:
        """Silence the agent's current reply at once and keep listening; safe from any thread."""
        self._call_on_loop(self._interrupt_now)

    async def run(self, start_index: int) -> ConversationAccount:
        """Converse, sending microphone audio from ring index ``start_index``, until it ends."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._position = start_index
        self.account = ConversationAccount(start_index=start_index, rate=self.ring.rate)
        behind = max(0, self.ring.write_index - start_index)
        self._started_wall = time.time() - behind / self.ring.rate
        self._open_transcript()
        self.events.publish(ev.SessionPhase(phase="started", mode="agent"))
        with log_context(MODE="agent"):
            try:
                await self._connect_loop()
            finally:
                await self._teardown()
                self.events.publish(
                    ev.SessionPhase(
                        phase="ended",
                        mode="agent",
                        session_id=self.session_id,
                        account=self.account.as_dict(),
                    )
                )
        account = self.account
        log.log(
            logging.ERROR if account.lost_samples else logging.INFO,
            "conversation ended: %s",
            account.summary(),
        )
        return account

    # ----------------------------------------------------------- connections

    async def _connect_loop(self) -> None:
        """Open a connection whenever the protocol asks, until it has finished.

        The protocol decides when (its reconnect policy, resume window and
        give-up bound); this loop only carries its :class:`Connect` out and
        reports how the attempt ended.
        """
        ticker = asyncio.create_task(self._tick_loop(), name="agent-tick")
        try:
            if self._stop_requested:
                self._apply(self.protocol.stop(self.clock()))
            self._apply(self.protocol.start(self.clock()))
            while not self.protocol.finished:
                if self._connect_due is None:
                    self._wake.clear()
                    await self._wake.wait()  # set by a Connect, a Finish or a stop
                    continue
                self._connect_due = None
                self._publish_state("connecting")
                outcome = await self._connect_once()
                self._end_of_stream()  # a reply cut off by the drop: let its queued part play
                now = self.clock()
                if isinstance(outcome, Failure):
                    self._apply(self.protocol.connect_failed(now, outcome))
                else:
                    self._apply(self.protocol.closed(now, *outcome))
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    async def _connect_once(self) -> Failure | tuple[int | None, str]:
        """One connection attempt and its whole life: its failure, or its close code and reason."""
        try:
            token = await self.tokens.fetch()
        except CONNECT_ERRORS as exc:
            failure = failure_from(exc)
            note_connect_failure(self.tokens, exc, failure.retry_after)
            return failure
        try:
            return await self._connection_with(token)
        finally:
            note_connection_ended(self.tokens)  # however it ended: the keeper may ask again

    async def _connection_with(self, token: Secret) -> Failure | tuple[int | None, str]:
        try:
            ws = await open_session_socket(
                _with_token(self.url, token), tls_for=self.url, limits=self.limits.websocket
            )
        except CONNECT_ERRORS as exc:
            failure = failure_from(exc)
            note_connect_failure(self.tokens, exc, failure.retry_after)
            return failure
        retire_secret(token)  # the upgrade redeemed it: single-use, it opens nothing now
        try:
            async with ws:
                await self._serve(ws)
        except websockets.exceptions.WebSocketException as exc:
            return None, redact(f"{exc.__class__.__name__}: {exc}")
        code = ws.close_code
        return (None if code in (None, 1006) else code), ws.close_reason or ""

    async def _serve(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._outbox = asyncio.Queue()
        self._ready = asyncio.Event()
        sender = asyncio.create_task(self._send_loop(ws, self._outbox), name="agent-send")
        pump = asyncio.create_task(self._pump_audio(ws), name="agent-audio")
        try:
            self._apply(self.protocol.opened(self.clock()))
            async for message in ws:
                self._apply(self.protocol.message(self.clock(), message))
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            self._ws = None
            for task in (pump, sender):
                task.cancel()
            for task in (pump, sender):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _send_loop(self, ws: ClientConnection, outbox: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            message = await outbox.get()
            try:
                await ws.send(json.dumps(message))
            except websockets.exceptions.ConnectionClosed:
                return

    async def _tick_loop(self) -> None:
        """Timers: sleep until the protocol's next deadline (or a change re-plans it)."""
        replan = self._replan
        while True:
            replan.clear()
            delay = self._tick_delay(self.clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await replan.wait()
            now = self.clock()
            if self.protocol.awaiting_drain and self._speaker_quiet():
                self._apply(self.protocol.playback_drained(now))
            self._apply(self.protocol.tick(now))

    def _tick_delay(self, now: float) -> float:
        limits = self.limits
        if self.protocol.awaiting_drain:
            return limits.tick_seconds
        deadline = self.protocol.next_timer()
        if deadline is None:
            return limits.max_tick_seconds
        # A deadline already past that tick() did not act on must not make a busy loop.
        return min(limits.max_tick_seconds, max(deadline - now, limits.tick_seconds))

    async def _pump_audio(self, ws: ClientConnection) -> None:
        """Ring -> 24 kHz -> ``input.audio``, only while the session is ready, paced.

        A stop while it runs is carried out here, after the last audio: the
        resampler's tail (audio the account already counts as sent) goes out,
        and only then ``session.end``, so the service has every sample counted.
        """
        await self._ready.wait()
        self._pumping = True
        try:
            await self._pump_ready_audio(ws)
        finally:
            self._pumping = False
            if self._stop_requested:
                self._end_conversation()

    async def _pump_ready_audio(self, ws: ClientConnection) -> None:
        ring, limits = self.ring, self.limits
        chunk = self._chunk_samples
        buf = np.empty(chunk, dtype=np.int16)
        # Counted on what the service counts: the 24 kHz samples sent since session.ready.
        pacer = Pacer(AGENT_RATE, PacingLimits(limits.max_lead_seconds))
        pacer.begin(self._ready_at)
        while self.protocol.ready:
            if self._stop_requested:
                await self._send_pcm(ws, pacer, self._resampler.flush())
                return
            end = ring.write_index if self._stop_index is None else self._stop_index
            available = min(ring.write_index, end) - self._position
            if available < chunk and end < ring.write_index:
                await asyncio.sleep(limits.audio_wait_seconds)  # stopping: nothing more to send
                continue
            if available < chunk:
                await ring.wait_until_async(
                    self._position + chunk, timeout=limits.audio_wait_seconds
                )
                continue
            start = self._position
            result = ring.read(start, chunk, out=buf)
            if result.lost:
                self.account.lost_samples += result.lost
                self._resampler.reset()
                log.warning("voice agent fell %d samples behind the ring; lost", result.lost)
            pcm = self._resampler.process(result.samples).astype("<i2", copy=False).tobytes()
            samples_out = len(pcm) // 2
            await self._paced(pacer, samples_out)  # a backlog: real time, no faster
            muted = self.protocol.muted
            actions = self.protocol.audio(pcm)
            if not actions:  # too little output yet (resampler warm-up)
                self._advance(result, muted)
                continue
            try:
                for action in actions:
                    if isinstance(action, proto.SendText):
                        await ws.send(action.text)
                    elif isinstance(action, SendJson):
                        await ws.send(json.dumps(action.message))
            except websockets.exceptions.ConnectionClosed:
                self._resampler.reset()  # this chunk goes again on the next connection
                return
            self._advance(result, muted)

    async def _send_pcm(self, ws: ClientConnection, pacer: Pacer, samples: np.ndarray) -> None:
        """Send the resampler's last output, paced (a closed connection ends it quietly)."""
        pcm = samples.astype("<i2", copy=False).tobytes()
        n = len(pcm) // 2
        if not n:
            return
        await self._paced(pacer, n)
        with contextlib.suppress(websockets.exceptions.ConnectionClosed):
            for action in self.protocol.audio(pcm):
                if isinstance(action, proto.SendText):
                    await ws.send(action.text)

    async def _paced(self, pacer: Pacer, samples: int) -> None:
        """Wait until ``samples`` more may go out without getting ahead of real time."""
        while not pacer.take(self.clock(), samples):
            await asyncio.sleep(max(0.0, (pacer.due(samples) or 0.0) - self.clock()))

    def _advance(self, result: ReadResult, muted: bool) -> None:
        n = len(result.samples)
        self._position = result.end
        self.account.sent_samples += n
        self.account.muted_samples += n if muted else result.silenced

    # --------------------------------------------------------------- actions

    def _apply(self, actions: list[proto.Action]) -> None:
        """Carry out the protocol's actions (never blocks: sends are queued)."""
        if actions:
            self._replan.set()  # the protocol moved: its next deadline may have too
        for action in actions:
            if isinstance(action, SendJson):
                if self._outbox is not None:
                    self._outbox.put_nowait(action.message)
            elif isinstance(action, proto.Play):
                self._play(action.pcm)
            elif isinstance(action, proto.FlushPlayback):
                self._flush_playback(action.reason)
            elif isinstance(action, proto.SpeakingChanged):
                self._publish_state("agent_speaking" if action.speaking else "listening")
            elif isinstance(action, proto.UserTranscript):
                self._on_user(action)
            elif isinstance(action, proto.AgentTranscript):
                self._on_agent(action)
            elif isinstance(action, proto.ReplyDone):
                log.debug("reply %s %s", action.reply_id, action.status)
                if action.status != "interrupted":
                    self._end_of_stream()
            elif isinstance(action, proto.CallTool):
                self._start_tool(action)
            elif isinstance(action, proto.SessionReady):
                self._on_ready(action)
            elif isinstance(action, proto.NewConversation):
                self._on_new_conversation(action)
            elif isinstance(action, proto.SessionError):
                level = logging.ERROR if action.fatal else logging.WARNING
                log.log(level, "voice agent error %s: %s", action.code, action.message)
                if not action.fatal:  # a fatal one is published once, with Finished
                    self.events.publish(ev.ErrorReported(message=action.message, where="agent"))
            elif isinstance(action, Notice):
                log.log(action.level, "%s", action.message)
            elif isinstance(action, Close):
                self._close_socket(action)
            elif isinstance(action, Connect):
                self._connect_due = action
                self._wake.set()
            elif isinstance(action, ReconnectAfter):
                self._publish_state("error" if action.auth_failure else "offline")
            elif isinstance(action, Finish):
                self._on_finished(action)
                self._wake.set()

    def _playback_idle(self) -> bool:
        return self.playback.idle if isinstance(self.playback, _Drains) else True

    def _speaker_quiet(self) -> bool:
        """The reply has stopped sounding, not just playing: half duplex unmutes then."""
        if isinstance(self.playback, _SoundsOut):
            return self.playback.quiet(self.config.audio.echo_tail_ms / 1000)
        return self._playback_idle()

    def _end_of_stream(self) -> None:
        if isinstance(self.playback, _EndsStream):
            self.playback.end_of_stream()

    def _play(self, pcm: bytes) -> None:
        """Queue reply audio; a reply longer than the playback buffer loses its excess only."""
        try:
            if self._mute_by_capture and isinstance(self.playback, _NotesOwnSound):
                self.playback.write_own_sound(pcm)
            else:
                self.playback.write(pcm)
        except BufferFull:
            if not self.account.dropped_reply_seconds:
                log.warning("reply longer than the playback buffer: its excess is dropped")
            self.account.dropped_reply_seconds += len(pcm) / 2 / AGENT_RATE

    def _flush_playback(self, reason: str) -> None:
        started = time.perf_counter()
        self.playback.flush()
        log.info("speaker flushed (%s) in %.1f ms", reason, (time.perf_counter() - started) * 1e3)

    def _on_ready(self, action: proto.SessionReady) -> None:
        self._ready_at = self.clock()  # the service counts pacing from here
        self._ready.set()
        if action.resumed:
            log.info("voice agent session %s resumed", action.session_id)
            self._write_record({"event": "resumed"})
            self.events.publish(
                ev.SessionPhase(phase="resumed", mode="agent", session_id=action.session_id)
            )
        else:
            log.info("voice agent session %s ready", action.session_id)
            self._write_record({"event": "session_started"})
        self._publish_state("agent_speaking" if self.protocol.speaking else "listening")

    def _on_new_conversation(self, action: proto.NewConversation) -> None:
        # The agent lost the context: the audio of the outage belongs to the old
        # conversation, so the new one starts from now; the skipped range is kept
        # in the account for the caller.
        now_index = self.ring.write_index
        if now_index > self._position:
            self.account.skipped_ranges.append((self._position, now_index))
            self.account.skipped_samples += now_index - self._position
            self._keep_skipped(self._position, now_index)
            self._position = now_index
        self._resampler.reset()
        log.warning(
            "voice agent session could not be resumed (%s); starting a new conversation",
            action.reason,
        )
        self._write_record({"event": "new_conversation", "reason": action.reason})
        self.events.publish(
            ev.SessionPhase(phase="new_conversation", mode="agent", reason=action.reason)
        )
        if self.on_notice is not None:
            try:
                self.on_notice(NOTICE_NEW_CONVERSATION)
            except Exception:
                log.exception("new-conversation notice failed")

    def _on_user(self, action: proto.UserTranscript) -> None:
        self.events.publish(ev.AgentUser(text=action.text, final=action.final))
        if action.final:
            log.info("user: %s", action.text)
            self._write_record({"role": "user", "text": action.text})

    def _on_agent(self, action: proto.AgentTranscript) -> None:
        self.events.publish(
            ev.AgentReply(
                text=action.text, reply_id=action.reply_id, interrupted=action.interrupted
            )
        )
        log.info("agent%s: %s", " (interrupted)" if action.interrupted else "", action.text)
        self._write_record(
            {
                "role": "agent",
                "text": action.text,
                "reply_id": action.reply_id,
                "interrupted": action.interrupted,
            }
        )

    def _on_finished(self, action: Finish) -> None:
        self.account.stop_reason = action.reason
        if action.error:
            self.account.error = action.error
            self.events.publish(ev.ErrorReported(message=action.error, where="agent"))
        self._ready.clear()

    def _close_socket(self, action: Close) -> None:
        ws = self._ws
        if ws is not None:
            task = asyncio.create_task(ws.close(action.code, action.reason[:100]))
            self._tool_tasks.add(task)  # keep a reference until it is done
            task.add_done_callback(self._tool_tasks.discard)

    # ----------------------------------------------------------------- tools

    def _start_tool(self, call: proto.CallTool) -> None:
        log.info("tool call %s: %s", call.call_id, call.name)
        self._write_record(
            {
                "event": "tool_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            }
        )
        task = asyncio.create_task(self._run_tool(call), name=f"tool-{call.name}")
        self._tool_tasks.add(task)
        task.add_done_callback(self._tool_tasks.discard)

    async def _run_tool(self, call: proto.CallTool) -> None:
        result = await self.tools.run(call.name, call.arguments)
        self._write_record({"event": "tool_result", "call_id": call.call_id, "result": result})
        self._apply(self.protocol.tool_finished(call.call_id, result, self.clock()))

    # ------------------------------------------------------- thread-safe calls

    def _call_on_loop(self, func: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None:  # not running yet: remember a stop for when it does
            if func == self._stop_now:
                self._stop_requested = True
            return
        if threading.get_ident() == self._loop_thread:
            func()
        else:
            with contextlib.suppress(RuntimeError):  # loop closed: nothing to do
                loop.call_soon_threadsafe(func)

    def _stop_now(self) -> None:
        self._stop_requested = True
        if self._pumping and self.protocol.ready:
            # The audio pump ends the conversation itself, after its last audio: what
            # the resampler still holds goes out first, and session.end after it.
            self._wake.set()
            return
        self._end_conversation()

    def _end_conversation(self) -> None:
        """``session.end`` (or the end at once, not connected); a second call does nothing."""
        reason = "stopped" if self._stop_index is None else "muted"  # as live's account says
        self._apply(self.protocol.stop(self.clock(), reason))
        self._wake.set()

    def _interrupt_now(self) -> None:
        self._apply(self.protocol.interrupt(self.clock()))

    # -------------------------------------------------------- state & records

    def _publish_state(self, state: ev.State) -> None:
        self.events.publish(ev.StateChanged(state=state, mode="agent", detail="voice agent"))

    def _open_transcript(self) -> None:
        directory = self.state_dir / "conversations"
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        for n in range(100):
            path = directory / (f"{stamp}.jsonl" if n == 0 else f"{stamp}-{n}.jsonl")
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            self._transcript = os.fdopen(fd, "w", encoding="utf-8")
            self.account.transcript_path = str(path)
            return
        log.error("could not create a conversation file in %s", directory)

    def _write_record(self, record: dict[str, Any]) -> None:
        file = self._transcript
        if file is None:
            return
        line = {
            "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            "session_id": self.protocol.session_id,
            **record,
        }
        try:
            file.write(json.dumps(line, ensure_ascii=False, default=str) + "\n")
            file.flush()
        except OSError as exc:
            log.error("conversation file write failed: %s", exc)

    def _keep_skipped(self, start: int, end: int) -> None:
        """Spool ring ``[start, end)``: read now, written on a worker thread (origin ``agent``)."""
        if self.spool is None:
            return
        result = self.ring.read(start, end - start)
        samples = result.samples.copy()
        offset = result.start - self.account.start_index
        started_at = self._started_wall + offset / self.ring.rate
        task = asyncio.get_running_loop().create_task(
            self._spool_skipped(samples, result.lost, offset, started_at), name="agent-spool"
        )
        self._keeping.add(task)
        task.add_done_callback(self._keeping.discard)

    async def _spool_skipped(
        self, samples: np.ndarray, lost: int, offset: int, started_at: float
    ) -> None:
        spool, rate = self.spool, self.ring.rate
        assert spool is not None
        session_id = self.protocol.session_id or None

        def write() -> tuple[str | None, int, str | None]:
            try:
                writer = spool.open_recording(
                    "agent", rate, session_id, started_at, session_offset=offset
                )
            except Exception as exc:  # SpoolFull above all: the audio stays counted skipped
                return None, 0, f"{type(exc).__name__}: {exc}"
            try:
                writer.write(samples)
                return writer.id, len(samples), None
            except Exception as exc:
                written = writer.samples_written
                with contextlib.suppress(Exception):
                    writer.note_lost(len(samples) - written)
                kept_in = writer.id if written else None
                return kept_in, written, f"{type(exc).__name__}: {exc}"
            finally:
                with contextlib.suppress(Exception):  # what was written is durable
                    writer.close()

        recording, kept, failure = await asyncio.to_thread(write)
        self.account.spooled_from_skipped(kept, lost)
        if recording is not None:
            self.account.spool_recordings.append(recording)
        if failure is not None:
            log.error("audio the agent could not hear was not kept (%s)", failure)
        else:
            log.info("%.1f s the agent could not hear kept in the spool", kept / rate)

    async def _teardown(self) -> None:
        for task in list(self._tool_tasks):
            task.cancel()
        for task in list(self._tool_tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._keeping:  # spool writes finish even when the conversation is cancelled
            await asyncio.wait(set(self._keeping))
        if not self._playback_idle():  # the conversation is over: nothing more may be heard
            self.playback.flush()
        stats = self.protocol.stats
        account = self.account
        account.end_index = self._position
        account.captured_samples = account.end_index - account.start_index
        account.session_ids = list(self.protocol.session_ids)
        account.connections = stats.connections
        account.resumes = stats.resumes
        account.new_conversations = stats.new_conversations
        account.user_turns = stats.user_turns
        account.agent_replies = stats.agent_replies
        account.interrupted_replies = stats.interrupted_replies
        account.tool_calls = stats.tool_calls
        account.garbled_messages = stats.garbled_messages
        if not account.stop_reason:
            account.stop_reason = self.protocol.finish_reason or "cancelled"
        if account.error is None:
            account.error = self.protocol.error
        self._write_record(
            {"event": "ended", "reason": account.stop_reason, "error": account.error}
        )
        if self._transcript is not None:
            with contextlib.suppress(OSError):
                self._transcript.close()
            self._transcript = None


def _with_token(url: str, token: Secret) -> str:
    """The WebSocket URL with ``?token=`` (never logged: it carries a credential)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "token"]
    query.append(("token", token.reveal()))
    return urlunsplit(parts._replace(query=urlencode(query)))
