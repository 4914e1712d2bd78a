"""Universal Streaming v3 session logic, sans I/O: events in, actions out.

:class:`StreamingSession` never touches a socket, a clock or a thread. The
asyncio runner (``appliance.live``) feeds it events -- ``start``,
``opened``, ``connect_failed``, ``message``, ``closed``, ``audio``,
``lost``, ``stop``, ``tick``, and a person's ``retune`` (key terms, turn
silences: :mod:`appliance.protocol.tuning`) and ``end_turn`` -- each stamped
with the runner's monotonic time, and
carries out the actions it returns: the shared ones of
:mod:`appliance.protocol.vocabulary` (:class:`Connect`, :class:`SendJson`,
:class:`Close`, :class:`ReconnectAfter`, :class:`Notice`, :class:`Finish`)
and its own :class:`SendAudio`, :class:`Spool`, :class:`EmitTurn`. So every
close code, garbled message and pacing rule is tested without sockets or sleeps.

Positions are absolute sample indices of the session's 16 kHz stream (index 0
is the first sample of the session, pre-roll included); the runner maps them
to its audio buffer.

Three rules make "every word exactly once, never ahead of real time" hold
(the whole reasoning is in ``docs/delivery.md``):

* **Pacing.** A connection's audio never leads wall time since its ``Begin``
  by more than one frame (:class:`appliance.protocol.pacer.Pacer`). A
  backlog longer than the live window (that lead plus ``max_lag_seconds``)
  is never caught up: its oldest part goes to the spool (:class:`Spool`,
  ending in a pause), and live streaming resumes close to now.
* **Evidence.** Audio is *confirmed* only by the service: the words of a
  final turn (up to the last word's end plus ``resume_guard_ms``), a later
  message placed after it (a turn's first word, ``SpeechStarted``'s
  timestamp), or ``Termination`` (less what its ``audio_duration_seconds``
  shows it never got). After any other end of a connection, everything past
  the confirmed point is sent again or spooled.
* **Nothing overwritten.** Unconfirmed audio about to fall out of the buffer
  is spooled; what the capture ring overwrote before it was read is lost,
  and counted.

Every sample of ``[0, end)`` ends up exactly once in the account as streamed
(confirmed live), spooled, or lost.

Close codes: network errors, 1000 without ``Termination``, 3005, 3009 and a
dead keepalive -> reconnect when the shared
:class:`~appliance.protocol.policy.ReconnectPolicy` says (one quick
reconnect after fresh audio, otherwise full-jitter backoff); 1008 -> a new
token soon, then a slow retry; 3008 -> roll over at once; 3006/3007 -> a bug
on our side, logged loudly, then backoff. No retry is ever sooner than the
retry floor after a failure.
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeGuard

from appliance.protocol.account import Account, AccountMode
from appliance.protocol.failures import ConnectFailure, Failure
from appliance.protocol.messages import (
    MAX_KIND_CHARS,
    Rejected,
    describe_failure,
    excerpt,
    parse_message,
)
from appliance.protocol.pacer import Pacer, PacingLimits
from appliance.protocol.policy import DEFAULT_RECONNECT_LIMITS, ReconnectLimits, ReconnectPolicy
from appliance.protocol.retry import retry_limits
from appliance.protocol.tuning import FORCE_ENDPOINT, Tuning
from appliance.protocol.vocabulary import (
    CLOSE_ABNORMAL,
    CLOSE_NORMAL,
    Close,
    Connect,
    Finish,
    Notice,
    ReconnectAfter,
    SendJson,
)

log = logging.getLogger(__name__)

STREAM_RATE = 16_000
MIN_FRAME_MS = 50
MAX_FRAME_MS = 1000

#: A WebSocket close frame's reason is at most this long (RFC 6455: 123 bytes).
MAX_CLOSE_REASON_CHARS = 123
CLOSE_UNAUTHORIZED = 1008
CLOSE_CANCELLED = 3005
CLOSE_INVALID_MESSAGE = 3006
CLOSE_INVALID_AUDIO = 3007
CLOSE_EXPIRED = 3008
CLOSE_TOO_MANY_SESSIONS = 3009


# ---------------------------------------------------------------------------
# Settings


_RECONNECT = DEFAULT_RECONNECT_LIMITS


@dataclass(frozen=True)
class StreamingLimits:
    """Every limit of the session logic, named, with the reasoning in the defaults."""

    # Shortest steady-state frame (50..1000); below 2 chunks all is sent. 200 ms: five
    # wake-ups a second (100 ms cost 0.2 CPU-s/min more), a word out <= 200 ms late.
    chunk_ms: int = 200
    backlog_frame_ms: int = 1000  # longest frame when sending a backlog (<= 1000)
    # Audio never leads wall time since Begin by more than this (one maximum-size frame).
    max_lead_seconds: float = 1.0
    # A backlog longer than the lead is streamed late by at most this much; beyond it,
    # its oldest part goes to the spool so live streaming resumes close to now.
    max_lag_seconds: float = 1.0
    # The reconnect policy's (protocol.policy, protocol.retry), flattened for settings.
    backoff_base_seconds: float = _RECONNECT.retry.base_seconds
    backoff_max_seconds: float = _RECONNECT.retry.cap_seconds
    retry_floor_seconds: float = _RECONNECT.retry.floor_seconds  # never sooner after a failure
    auth_retry_seconds: float = _RECONNECT.slow_retry_seconds  # once credentials look wrong
    auth_failures_before_slow_retry: int = _RECONNECT.refusals_before_slow_retry
    healthy_after_seconds: float = _RECONNECT.healthy_after_seconds  # resets the backoff
    # A drop after a connection that got fresh audio through is reconnected almost at
    # once (a jitter above the retry floor, so a fleet does not land together); at most
    # one such quick reconnect per spacing, every other retry backs off exponentially.
    quick_reconnect_max_seconds: float = _RECONNECT.quick_reconnect_max_seconds
    quick_reconnect_spacing_seconds: float = _RECONNECT.quick_reconnect_spacing_seconds
    begin_timeout_seconds: float = 10.0  # connected but no Begin: give up on it
    connect_timeout_seconds: float = 15.0  # token + handshake bound
    termination_timeout_seconds: float = 5.0  # Terminate sent, waiting for Termination
    history_samples: int = 10 * STREAM_RATE  # how far back the audio buffer reaches
    # Unconfirmed audio this close to falling out of the buffer is kept in the spool.
    history_margin_samples: int = 2 * STREAM_RATE
    resume_guard_ms: int = 100  # confirmed point sits this far past a final word's end
    spool_batch_ms: int = 1000  # a backlog is spooled in ranges of at least this much

    def __post_init__(self) -> None:
        if not MIN_FRAME_MS <= self.chunk_ms <= MAX_FRAME_MS:
            raise ValueError("chunk_ms must be in 50..1000")
        if not self.chunk_ms <= self.backlog_frame_ms <= MAX_FRAME_MS:
            raise ValueError("backlog_frame_ms must be in chunk_ms..1000")
        if not 0 < self.max_lead_seconds <= MAX_FRAME_MS / 1000:
            raise ValueError("max_lead_seconds must be in (0, 1]")
        if self.max_lead_seconds * 1000 < self.chunk_ms:
            raise ValueError("max_lead_seconds must hold one chunk")
        if self.max_lag_seconds < 0:
            raise ValueError("max_lag_seconds must be >= 0")
        if not 0 <= self.history_margin_samples < self.history_samples:
            raise ValueError("history_margin_samples must be below history_samples")

    @property
    def reconnect(self) -> ReconnectLimits:
        """The shared reconnect policy's limits, from these."""
        return ReconnectLimits(
            retry=retry_limits(
                self.backoff_base_seconds, self.backoff_max_seconds, self.retry_floor_seconds
            ),
            quick_reconnect_max_seconds=self.quick_reconnect_max_seconds,
            quick_reconnect_spacing_seconds=self.quick_reconnect_spacing_seconds,
            slow_retry_seconds=self.auth_retry_seconds,
            refusals_before_slow_retry=self.auth_failures_before_slow_retry,
            healthy_after_seconds=self.healthy_after_seconds,
        )


def ms_to_samples(ms: float) -> int:
    return round(ms * STREAM_RATE / 1000)


# ---------------------------------------------------------------------------
# Actions


@dataclass(frozen=True)
class SendAudio:
    """Send one binary frame: stream samples ``[start, end)`` then ``pad`` zero samples."""

    start: int
    end: int
    pad: int = 0


@dataclass(frozen=True)
class Spool:
    """Keep stream samples ``[start, end)`` for later pre-recorded transcription."""

    start: int
    end: int


@dataclass(frozen=True)
class Word:
    text: str
    start_ms: int  # in the session's stream time
    end_ms: int
    confidence: float


@dataclass(frozen=True)
class Turn:
    """A turn as the session reports it: order and word times across reconnects."""

    order: int  # position in the session (0, 1, ...), not the server's per-connection order
    text: str
    words: tuple[Word, ...]
    final: bool
    formatted: bool
    server_session_id: str
    speaker: str | None = None


@dataclass(frozen=True)
class EmitTurn:
    turn: Turn


Action = (
    Connect | SendAudio | SendJson | Close | ReconnectAfter | Spool | EmitTurn | Finish | Notice
)


# ---------------------------------------------------------------------------
# The account


@dataclass(kw_only=True)
class SessionAccount(Account):
    """Where every sample of a live session went (16 kHz stream samples).

    ``captured == streamed + spooled + lost`` (streamed is the account's
    ``delivered``; a live session skips nothing). ``caught_up`` is the part of
    what was sent that left from a backlog (pre-roll, after a reconnect); it
    includes resent audio, so it is not part of the sum.
    """

    mode: AccountMode = "live"
    rate: int = STREAM_RATE
    caught_up_samples: int = 0
    resent_samples: int = 0
    connections: int = 0
    reconnects: int = 0
    server_session_ids: list[str] = field(default_factory=list)
    turns: int = 0

    delivered_as: ClassVar[str] = "streamed"
    delivered_key: ClassVar[str | None] = "streamed_samples"

    @property
    def streamed_samples(self) -> int:
        """Streamed and confirmed by the service: live's delivered audio."""
        return self.delivered_samples

    @streamed_samples.setter
    def streamed_samples(self, value: int) -> None:
        self.delivered_samples = value

    def details(self) -> str:
        s = self.seconds
        return (
            f"caught up {s(self.caught_up_samples):.3f} s, "
            f"resent {s(self.resent_samples):.3f} s; {self.connections} connection(s), "
            f"{self.reconnects} reconnect(s), {self.turns} turn(s)"
        )


# ---------------------------------------------------------------------------
# The session


class Phase(enum.Enum):
    IDLE = "idle"
    CONNECTING = "connecting"  # Connect emitted, waiting for connected/connect_failed
    AWAITING_BEGIN = "awaiting_begin"
    STREAMING = "streaming"
    TERMINATING = "terminating"  # Terminate sent, waiting for Termination
    CLOSING = "closing"  # Close emitted (or server closing), waiting for closed
    WAITING = "waiting"  # disconnected, next Connect at retry_at
    FINISHED = "finished"


class _Intervals:
    """A set of disjoint [start, end) intervals (samples known to be lost)."""

    def __init__(self) -> None:
        self.items: list[tuple[int, int]] = []

    def add(self, start: int, end: int) -> None:
        if end <= start:
            return
        merged: list[tuple[int, int]] = []
        for a, b in self.items:
            if b < start or a > end:
                merged.append((a, b))
            else:
                start, end = min(a, start), max(b, end)
        merged.append((start, end))
        self.items = sorted(merged)

    def overlap(self, start: int, end: int) -> int:
        return sum(max(0, min(b, end) - max(a, start)) for a, b in self.items)


@dataclass
class _Connection:
    """What one connection has seen and done; each ``opened`` starts a new one."""

    resume: int = 0  # the stream index this connection's audio time zero stands for
    begin_time: float = 0.0
    server_session: str = ""
    fresh_audio: bool = False  # it sent audio never sent before
    terminate_sent: bool = False
    termination_seen: bool = False
    pending_final: dict[str, Any] | None = None  # an unformatted final awaiting its format
    last_frame: tuple[int, int] = (0, 0)  # samples and padding of the last frame sent
    tuning: Tuning = field(default_factory=Tuning)  # what the server was told (URL, updates)


class StreamingSession:
    """One press-to-stop live transcription, across any number of connections."""

    def __init__(
        self,
        limits: StreamingLimits | None = None,
        *,
        policy: ReconnectPolicy | None = None,
        rng: random.Random | None = None,
        format_turns: bool = True,
        quiet_point: Callable[[int, int], int] | None = None,
        tuning: Tuning | None = None,
    ):
        """``format_turns``: the connection asked for formatted finals (wait for them).

        ``quiet_point(start, end)``: the latest quiet stream index in
        ``[start, end]``, so a spooled backlog ends in a pause (None: cut anywhere).

        ``tuning``: the key terms and turn silences the first connection asks for;
        :meth:`retune` changes them for this connection and every later one.
        """
        self.limits = limits or StreamingLimits()
        lim = self.limits
        self.policy = policy or ReconnectPolicy(lim.reconnect, rng or random.Random())
        self.phase = Phase.IDLE
        self.account = SessionAccount()
        self._chunk = ms_to_samples(lim.chunk_ms)
        self._backlog_frame = ms_to_samples(lim.backlog_frame_ms)
        self._pacer = Pacer(STREAM_RATE, PacingLimits(lim.max_lead_seconds))
        self._lead = self._pacer.max_lead_samples
        self._window = self._lead + round(lim.max_lag_seconds * STREAM_RATE)
        self._spool_batch = ms_to_samples(lim.spool_batch_ms)
        self._min_frame = ms_to_samples(MIN_FRAME_MS)
        self._max_frame = ms_to_samples(MAX_FRAME_MS)
        self._available = 0  # stream samples the runner can supply: [0, available)
        self._held_back = 0  # captured past available, still in the runner's resampler
        self._end: int | None = None  # set by stop(): the session's last sample + 1
        self._confirmed = 0  # [0, confirmed) is streamed (confirmed) or spooled
        self._sent = 0  # [resume, sent) sent on the current connection
        self._sent_max = 0  # furthest sample ever sent (to count resends)
        self._conn = _Connection()  # the current (or last) connection's own state
        self._lost = _Intervals()
        self._attempt = 0
        self._retry_at = 0.0
        self._disconnected_since: float | None = None
        self._spooling = False  # this outage has sent audio to the spool (said once)
        self._phase_deadline = math.inf  # the current phase's bound on waiting for the server
        self._stop_reason = ""
        self._turn_order = 0  # session-wide order of the next final turn
        self.format_turns = format_turns
        self.quiet_point = quiet_point
        self.tuning = tuning or Tuning()
        self._asked_tuning = self.tuning  # what the connection being opened asks for
        self.token_fingerprints: set[str] = set()
        self.garbled_messages = 0
        self.ignored_messages = 0

    # ------------------------------------------------------------ properties

    @property
    def confirmed(self) -> int:
        return self._confirmed

    @property
    def sent(self) -> int:
        return self._sent

    @property
    def finished(self) -> bool:
        return self.phase is Phase.FINISHED

    @property
    def connected(self) -> bool:
        return self.phase in (
            Phase.AWAITING_BEGIN,
            Phase.STREAMING,
            Phase.TERMINATING,
            Phase.CLOSING,
        )

    @property
    def stopping(self) -> bool:
        return self._end is not None

    def note_token(self, fingerprint: str) -> bool:
        """Record a token's fingerprint; False if it was used before (never connect with it)."""
        if fingerprint in self.token_fingerprints:
            return False
        self.token_fingerprints.add(fingerprint)
        return True

    def connection_tuning(self) -> Tuning:
        """The tuning to put on the URL of the connection being opened (the current one).

        Noted as what that connection asked for: a retune that lands between
        this call and its ``Begin`` is sent as an update right after ``Begin``.
        """
        self._asked_tuning = self.tuning
        return self.tuning

    # ---------------------------------------------------------------- events

    def start(self, now: float) -> list[Action]:
        if self.phase is not Phase.IDLE:
            return []
        return self._connect(now)

    def opened(self, now: float) -> list[Action]:
        """The WebSocket handshake succeeded (the server may still close at once)."""
        if self.phase is not Phase.CONNECTING:
            return []
        self.phase = Phase.AWAITING_BEGIN
        self._phase_deadline = now + self.limits.begin_timeout_seconds
        self.account.connections += 1
        self._conn = _Connection(tuning=self._asked_tuning)
        self._pacer.end()
        return []

    def connect_failed(self, now: float, failure: Failure) -> list[Action]:
        """No connection was made (token error, refused, timeout, bad HTTP answer)."""
        if self.phase is not Phase.CONNECTING:
            return []
        self._mark_disconnected(now)
        detail = failure.detail
        if failure.kind is ConnectFailure.AUTH:
            return self._refused(now, f"token request refused ({detail})")
        wait = self.policy.after_failure(failure)
        if wait.slow:
            return self._after_disconnect(
                now,
                wait.seconds,
                f"cannot connect ({detail}); retrying slowly",
                level=logging.ERROR,
            )
        return self._after_disconnect(now, wait.seconds, f"connect failed ({detail})")

    def message(self, now: float, text: str | bytes) -> list[Action]:
        """A text frame from the server. Anything it holds is survived: at worst it is dropped."""
        if not self.connected:
            return []
        msg = parse_message(text)
        if isinstance(msg, Rejected):
            self.garbled_messages += 1
            return [Notice(logging.WARNING, f"ignored a server message: {msg.reason}")]
        kind = msg.get("type")
        try:
            return self._on_message(now, kind, msg)
        except Exception as exc:  # one bad message never ends the session
            self.garbled_messages += 1
            return [Notice(logging.WARNING, describe_failure(kind, exc))]

    def _on_message(self, now: float, kind: object, msg: dict[str, Any]) -> list[Action]:
        if kind == "Begin":
            return self._on_begin(now, msg)
        if kind == "Turn":
            return self._on_turn(now, msg)
        if kind == "Termination":
            return self._on_termination(now, msg)
        if kind == "SpeechStarted":
            timestamp = msg.get("timestamp")
            if _is_number(timestamp):
                self._confirm_before(float(timestamp))
            return []
        if kind == "Error":
            code = msg.get("error_code")
            return [
                Notice(
                    logging.WARNING,
                    f"server error {excerpt(code, MAX_KIND_CHARS)}: {excerpt(msg.get('error'))}",
                )
            ]
        self.ignored_messages += 1  # Heartbeat, Warning, future types
        return []

    def closed(self, now: float, code: int | None, reason: str = "") -> list[Action]:
        """The connection ended (``code`` None or 1006: the network dropped it)."""
        if not self.connected:
            return []
        actions = self._flush_pending_final()
        was_terminating = self._conn.terminate_sent
        lived = now - self._conn.begin_time if self.phase is not Phase.AWAITING_BEGIN else 0.0
        confirmed_by_termination = self._conn.termination_seen
        self._mark_disconnected(now)
        code = CLOSE_ABNORMAL if code is None else code
        why = f"closed {code}" + (f" ({excerpt(reason, MAX_CLOSE_REASON_CHARS)})" if reason else "")
        rejected = code in (CLOSE_INVALID_MESSAGE, CLOSE_INVALID_AUDIO)
        if rejected:
            samples, pad = self._conn.last_frame
            actions.append(
                Notice(
                    logging.ERROR,
                    f"server rejected what we sent ({why}); last frame "
                    f"{samples} samples + {pad} padding ({(samples + pad) * 2} bytes, "
                    f"{(samples + pad) * 1000 / STREAM_RATE:.1f} ms) -- this is a bug",
                )
            )
        if confirmed_by_termination or was_terminating:  # Terminate is only sent when stopping
            # A finished connection. Stopping: finish; rolling over: connect again.
            if self._end is not None:
                return actions + self._finish(now)
            return actions + self._connect(now)
        if self._end is not None:
            # The stream broke while draining: keep the rest rather than loop.
            return [
                *actions,
                Notice(logging.WARNING, f"connection {why} while stopping"),
                *self._finish(now),
            ]
        if code == CLOSE_UNAUTHORIZED:
            return actions + self._refused(now, f"server refused the token: {why}")
        if code == CLOSE_EXPIRED:
            if lived >= self.limits.healthy_after_seconds:
                return [
                    *actions,
                    Notice(logging.INFO, "session expired on the server; rolling over"),
                    ReconnectAfter(0.0, why),
                    *self._connect(now),
                ]
            # Expired straight away: something is off (token cap too short); no hot loop.
            return actions + self._after_disconnect(now, self.policy.backoff.next_delay(), why)
        if rejected:  # a bug on our side: retrying at once would only repeat it
            return actions + self._after_disconnect(now, self.policy.backoff.next_delay(), why)
        wait = self.policy.after_drop(now, self._conn.fresh_audio)
        return actions + self._after_disconnect(now, wait.seconds, why)

    def audio(self, now: float, available: int, held_back: int = 0) -> list[Action]:
        """The runner can now supply stream samples ``[0, available)``.

        ``held_back``: samples past ``available`` that were captured but are still
        inside the resampler (it releases audio in blocks of ~30 ms).  They count
        toward a chunk being complete, so a frame goes as soon as a chunk's worth
        is captured, a little short, instead of waiting a whole capture block for
        the filter to let go of a few samples.
        """
        self._available = max(self._available, available)
        self._held_back = max(0, held_back)
        return self.tick(now)

    def lost(self, start: int, end: int) -> None:
        """The runner could not read ``[start, end)``: it was overwritten before it was read."""
        self._lost.add(start, end)

    def stop(self, now: float, end: int, reason: str = "stop requested") -> list[Action]:
        """Stop at stream index ``end`` (the runner has flushed everything up to it)."""
        if self._end is not None or self.phase is Phase.FINISHED:
            return []
        self._end = max(end, self._confirmed)
        self._available = max(self._available, self._end)
        self._stop_reason = reason
        if not self.connected:
            return self._finish(now)
        return self.tick(now)

    def retune(self, now: float, tuning: Tuning) -> list[Action]:
        """Key terms or turn silences changed mid-session: tell the open connection.

        No reconnect: an ``UpdateConfiguration`` with what differs goes out on a
        streaming connection at once; one still opening gets it after its
        ``Begin``; every later connection asks for ``tuning`` on its URL.
        Raises ValueError (nothing changed) if the service would refuse it.
        """
        problems = tuning.problems()
        if problems:
            raise ValueError("; ".join(problems))
        if self.phase is Phase.FINISHED or self._end is not None:
            return [Notice(logging.INFO, "the session is ending: retune not applied")]
        self.tuning = tuning
        actions: list[Action] = [Notice(logging.INFO, f"retuned: {_describe_tuning(tuning)}")]
        if self.phase is Phase.STREAMING:
            actions += self._send_tuning()
        return actions

    def end_turn(self, now: float) -> list[Action]:
        """Close the speaker's open turn at once (``ForceEndpoint``; the server ends it)."""
        if self.phase is not Phase.STREAMING or self._end is not None:
            return [Notice(logging.INFO, "no connection is streaming: no turn to end")]
        return [SendJson({"type": FORCE_ENDPOINT})]

    def _send_tuning(self) -> list[Action]:
        update = self.tuning.update_from(self._conn.tuning)
        self._conn.tuning = self.tuning
        return [SendJson(update)] if update is not None else []

    def tick(self, now: float) -> list[Action]:
        """Timers: retries, deadlines, pacing, outage spooling."""
        phase = self.phase
        if phase is Phase.WAITING:
            actions = self._spool_outage(now)
            if now >= self._retry_at:
                actions += self._connect(now)
            return actions
        if phase is Phase.CONNECTING:
            actions = self._spool_outage(now)
            if now >= self._phase_deadline:
                # The runner's own timeouts should have fired; do not wait forever.
                actions += self.connect_failed(
                    now, Failure(ConnectFailure.NETWORK, "connect timed out")
                )
            return actions
        if phase is Phase.AWAITING_BEGIN:
            actions = self._spool_outage(now)
            if now >= self._phase_deadline:
                self.phase = Phase.CLOSING
                actions.append(Close(CLOSE_NORMAL, "no Begin"))
            return actions
        if phase is Phase.TERMINATING:
            if now >= self._phase_deadline:
                self.phase = Phase.CLOSING
                return [
                    Notice(logging.WARNING, "no Termination in time; closing"),
                    Close(CLOSE_NORMAL, "no Termination"),
                ]
            return []
        if phase is Phase.STREAMING:
            return self._pump(now)
        return []

    def next_timer(self) -> float | None:
        """The earliest time ``tick`` has work without new audio or events (None: none).

        The runner sleeps until this, the audio of :meth:`audio_wanted`, or an
        event, instead of polling; a tick before it does nothing, after it is
        never too late.
        """
        phase = self.phase
        times: list[float] = []
        if phase is Phase.WAITING:
            times.append(self._retry_at)
        waits_for_peer = phase in (Phase.CONNECTING, Phase.AWAITING_BEGIN, Phase.TERMINATING)
        if waits_for_peer:
            times.append(self._phase_deadline)
        if phase is Phase.STREAMING:
            frame = self._next_frame()
            if frame is not None:
                # A frame waits for the pacer: due when a chunk of it (or all of it) fits.
                size = frame[0] + frame[1]
                due = self._pacer.due(min(size, max(self._chunk, self._min_frame)))
                if due is not None:
                    times.append(due)
        soonest = min(times, default=math.inf)
        return soonest if soonest < math.inf else None

    def audio_wanted(self) -> int | None:
        """The stream index whose arrival gives the session work (None: no audio needed).

        Streaming, that is the end of the next whole chunk (less what the runner
        reported held back in its resampler); otherwise (offline, or a frame
        waiting for pacing) one chunk past what the runner reported, so the
        backlog rules keep seeing the audio arrive.
        """
        if self.phase is Phase.FINISHED or self._end is not None:
            return None
        if self.phase is Phase.STREAMING and self._next_frame() is None:
            return max(self._sent + self._chunk - self._held_back, self._sent + self._min_frame)
        return self._available + self._chunk

    # --------------------------------------------------------------- helpers

    def _connect(self, now: float) -> list[Action]:
        if self._end is not None:
            return self._finish(now)
        self._attempt += 1
        self.phase = Phase.CONNECTING
        self._phase_deadline = now + self.limits.connect_timeout_seconds
        if self._disconnected_since is None:
            self._disconnected_since = now
        if self.account.connections:
            self.account.reconnects += 1
        return [Connect(self._attempt)]

    def _mark_disconnected(self, now: float) -> None:
        if self._disconnected_since is None:
            self._disconnected_since = now
        self._phase_deadline = math.inf

    def _after_disconnect(
        self,
        now: float,
        delay: float,
        why: str,
        *,
        level: int = logging.WARNING,
        auth: bool = False,
    ) -> list[Action]:
        self.phase = Phase.WAITING
        self._retry_at = now + delay
        actions: list[Action] = [
            Notice(level, f"{why}; reconnecting in {delay:.2f} s"),
            ReconnectAfter(delay, why, auth),
        ]
        return actions + self._spool_outage(now)

    def _refused(self, now: float, why: str) -> list[Action]:
        """The credential was refused: a new token soon, then (repeated) a slow retry."""
        wait = self.policy.after_refusal()
        if not wait.slow:
            # A token can be refused once (used, expired in flight): try a fresh one soon.
            return self._after_disconnect(now, wait.seconds, f"{why}; trying a new token")
        return self._after_disconnect(
            now,
            wait.seconds,
            f"credentials refused {self.policy.refusals} times in a row ({why}): check the API "
            "key or the token broker",
            level=logging.ERROR,
            auth=True,
        )

    def _on_begin(self, now: float, msg: dict[str, Any]) -> list[Action]:
        if self.phase is not Phase.AWAITING_BEGIN:
            return []
        sid = msg.get("id")
        self._conn.server_session = sid if isinstance(sid, str) else ""
        if self._conn.server_session:
            self.account.server_session_ids.append(self._conn.server_session)
        self.phase = Phase.STREAMING
        self._phase_deadline = math.inf
        self._conn.begin_time = now
        self._disconnected_since = None
        self._spooling = False
        self.policy.began(now)
        self._pacer.begin(now)
        # What cannot be streamed within the lag bound goes to the spool now; the rest
        # (at most one frame ahead of this connection's clock) is streamed from here.
        actions = self._spool_backlog(self._window)
        self._conn.resume = self._sent = self._confirmed
        # A retune made while this connection was opening goes out before any audio.
        return self._send_tuning() + actions + self._pump(now)

    def _turn_words(self, msg: dict[str, Any]) -> tuple[Word, ...]:
        words = msg.get("words")
        if not isinstance(words, list):
            return ()
        base_ms = self._conn.resume * 1000 / STREAM_RATE
        out = []
        for w in words:
            if not isinstance(w, dict):
                continue
            try:
                start = float(w.get("start", 0))
                end = float(w.get("end", start))
                conf = float(w.get("confidence", 0.0))
            except (TypeError, ValueError):
                continue
            out.append(
                Word(str(w.get("text", "")), round(base_ms + start), round(base_ms + end), conf)
            )
        return tuple(out)

    def _make_turn(self, msg: dict[str, Any], final: bool) -> Turn:
        text = msg.get("transcript")
        if not isinstance(text, str):
            text = ""
        speaker = msg.get("speaker_label")
        return Turn(
            order=self._turn_order,
            text=text,
            words=self._turn_words(msg),
            final=final,
            formatted=bool(msg.get("turn_is_formatted", False)),
            server_session_id=self._conn.server_session,
            speaker=speaker if isinstance(speaker, str) else None,
        )

    def _on_turn(self, now: float, msg: dict[str, Any]) -> list[Action]:
        if self.phase not in (Phase.STREAMING, Phase.TERMINATING, Phase.CLOSING):
            return []
        final = msg.get("end_of_turn") is True
        first = _first_word_start(msg.get("words"))
        if first is not None:
            # The server placed this turn's first word here: it processed what came before.
            self._confirm_before(first)
        if not final:
            return [EmitTurn(self._make_turn(msg, final=False))]
        formatted = msg.get("turn_is_formatted") is True
        actions: list[Action] = []
        if self.format_turns and not formatted:
            # The formatted copy follows; confirm the audio now, emit when it comes.
            actions += self._flush_pending_final()
            self._conn.pending_final = msg
            self._confirm_from_turn(msg)
            return actions
        pending = self._conn.pending_final
        self._conn.pending_final = None
        if pending is not None and pending.get("turn_order") != msg.get("turn_order"):
            actions += self._emit_final(pending)
        self._confirm_from_turn(msg)
        return actions + self._emit_final(msg)

    def _emit_final(self, msg: dict[str, Any]) -> list[Action]:
        turn = self._make_turn(msg, final=True)
        self._turn_order += 1
        self.account.turns += 1
        return [EmitTurn(turn)]

    def _flush_pending_final(self) -> list[Action]:
        pending, self._conn.pending_final = self._conn.pending_final, None
        return self._emit_final(pending) if pending is not None else []

    def _confirm_from_turn(self, msg: dict[str, Any]) -> None:
        words = msg.get("words")
        ends: list[float] = []
        if isinstance(words, list):
            for w in words:
                if isinstance(w, dict):
                    try:
                        ends.append(float(w["end"]))
                    except (KeyError, TypeError, ValueError):
                        continue
        if not ends:
            return
        point = self._conn.resume + ms_to_samples(max(ends) + self.limits.resume_guard_ms)
        self._advance_confirmed(min(point, self._sent))

    def _confirm_before(self, ms: float) -> None:
        """The server placed a message at ``ms`` of this connection's audio: what lies
        before it (less the guard) was processed.  Never past what was sent."""
        point = self._conn.resume + ms_to_samples(ms - self.limits.resume_guard_ms)
        self._advance_confirmed(min(point, self._sent))

    def _on_termination(self, now: float, msg: dict[str, Any]) -> list[Action]:
        actions = self._flush_pending_final()
        self._conn.termination_seen = True
        got = msg.get("audio_duration_seconds")
        point = self._sent
        if _is_number(got):
            # Whole seconds: the server has at least `got` and less than `got + 1` seconds.
            server_max = self._conn.resume + ms_to_samples((float(got) + 1.0) * 1000)
            if server_max < self._sent:
                sent_s = (self._sent - self._conn.resume) / STREAM_RATE
                actions.append(
                    Notice(
                        logging.WARNING,
                        f"server reports {got} s of audio but {sent_s:.2f} s were sent; rest kept",
                    )
                )
                point = server_max
        self._advance_confirmed(point)
        self.phase = Phase.CLOSING
        return [*actions, Close(CLOSE_NORMAL, "")]

    def _advance_confirmed(self, point: int) -> None:
        if point <= self._confirmed:
            return
        lost = self._lost.overlap(self._confirmed, point)
        self.account.streamed_samples += point - self._confirmed - lost
        self.account.lost_samples += lost
        self._confirmed = point
        self._sent = max(self._sent, point)

    def _spool_to(self, end: int) -> list[Action]:
        if end <= self._confirmed:
            return []
        start = self._confirmed
        lost = self._lost.overlap(start, end)
        self.account.spooled_samples += end - start - lost
        self.account.lost_samples += lost
        self._confirmed = end
        self._sent = max(self._sent, end)
        return [Spool(start, end)]

    def _spool_backlog(self, threshold: int) -> list[Action]:
        """Spool the oldest backlog once it is longer than ``threshold`` samples.

        A backlog longer than the live window (one frame of lead plus the lag
        bound) can never be streamed in real time, so its oldest part goes to
        the spool, ending in a pause when there is one, and what remains fits
        the window.
        """
        backlog = self._available - self._confirmed
        if backlog <= threshold:
            return []
        high = self._available - self._lead
        low = max(self._confirmed, self._available - self._window)
        end = high
        if self.quiet_point is not None:  # (low < high: the backlog exceeds the window)
            # End the range in a pause so live streaming resumes between words.
            end = max(low, min(high, self.quiet_point(low, high)))
        return self._spool_to(end)

    def _spool_outage(self, now: float) -> list[Action]:
        """While disconnected: spool what could no longer be streamed live, a batch at a time."""
        if self._disconnected_since is None:
            return []
        lim = self.limits
        # A batch past the live window, or sooner if the buffer's history is shorter.
        threshold = min(
            self._window + self._spool_batch, lim.history_samples - lim.history_margin_samples
        )
        actions = self._spool_backlog(threshold)
        if actions and not self._spooling:
            self._spooling = True
            actions.insert(
                0,
                Notice(
                    logging.WARNING,
                    f"offline for {now - self._disconnected_since:.1f} s: keeping the audio "
                    "for later transcription",
                ),
            )
        return actions

    def _spool_before_overwrite(self) -> list[Action]:
        """Unconfirmed audio about to fall out of the buffer is kept in the spool.

        Only the service's evidence confirms audio; during a long silence it
        sends none, and what it has not confirmed must not be overwritten.
        """
        lim = self.limits
        limit = self._available - (lim.history_samples - lim.history_margin_samples)
        if limit - self._confirmed < self._spool_batch:
            return []
        return self._spool_to(limit)

    def _pump(self, now: float) -> list[Action]:
        """Send what the pacer allows; at the end, Terminate."""
        lim = self.limits
        actions: list[Action] = []
        self.policy.still_up(now)
        while True:
            frame = self._next_frame()
            if frame is None:
                break
            size, pad, catching_up = frame
            allowed = self._pacer.allowance(now)
            if size + pad > allowed:
                size = self._fitting_frame(allowed)
                pad = 0
                if size == 0:
                    break
            if not self._pacer.take(now, size + pad):
                break  # (the fit above makes this unreachable; the pacer has the last word)
            start = self._sent
            self._sent += size
            self.account.resent_samples += max(0, min(self._sent, self._sent_max) - start)
            if self._sent > self._sent_max:
                self._sent_max = self._sent
                self._conn.fresh_audio = True
            if catching_up:
                self.account.caught_up_samples += size
            self._conn.last_frame = (size, pad)
            actions.append(SendAudio(start, self._sent, pad))
        actions += self._spool_before_overwrite()
        end = self._end
        # Stopping: the backlog drains within the live window (the pacer bounds it), then
        # Terminate.
        if end is not None and self._sent >= end and not self._conn.terminate_sent:
            self._conn.terminate_sent = True
            self.phase = Phase.TERMINATING
            self._phase_deadline = now + lim.termination_timeout_seconds
            actions.append(SendJson({"type": "Terminate"}))
        return actions

    def _fitting_frame(self, allowed: int) -> int:
        """The largest legal frame within ``allowed`` samples (0: wait for the pacer).

        At least a chunk, and never leaving a final tail too short to send.
        """
        limit = self._available if self._end is None else self._end
        size = min(allowed, limit - self._sent, self._max_frame)
        rest = limit - self._sent - size
        if self._end is not None and 0 < rest < self._min_frame:
            size -= self._min_frame
        return size if size >= max(self._chunk, self._min_frame) else 0

    def _next_frame(self) -> tuple[int, int, bool] | None:
        """The next frame to send as (samples, padding, catching up), pacing aside."""
        end = self._end
        limit = self._available if end is None else end
        backlog = limit - self._sent
        if backlog <= 0:
            return None
        if end is None and (backlog + self._held_back < self._chunk or backlog < self._min_frame):
            return None
        catching_up = backlog >= 2 * self._chunk
        # (A backlog only exists after a connection began behind capture; the pacer
        # decides how much of each frame may go now.)
        # In step with capture a frame takes everything ready (one to two chunks): a
        # chunk that ends a few samples past the newest capture block (the resampler's
        # look-ahead) would otherwise wait a whole block for them.
        size = min(self._backlog_frame if catching_up else backlog, backlog, self._max_frame)
        if end is not None and 0 < backlog - size < self._min_frame:
            # Never leave a tail shorter than a legal frame.
            size = backlog if backlog <= self._max_frame else backlog - self._min_frame
        pad = max(0, self._min_frame - size)  # only a tiny final tail is padded
        return size, pad, catching_up

    def _finish(self, now: float) -> list[Action]:
        if self.phase is Phase.FINISHED:
            return []
        end = self._end if self._end is not None else self._available
        actions = self._spool_to(end)  # whatever was not confirmed live is kept
        self.phase = Phase.FINISHED
        acc = self.account
        acc.captured_samples = self._confirmed
        acc.stop_reason = self._stop_reason or "ended"
        actions.append(Finish(acc.stop_reason))
        return actions


def _describe_tuning(tuning: Tuning) -> str:
    terms = ", ".join(tuning.keyterms_prompt) or "none"
    return (
        f"{len(tuning.keyterms_prompt)} key term(s) ({excerpt(terms)}), turn silence "
        f"{tuning.min_turn_silence}..{tuning.max_turn_silence} ms"
    )


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _first_word_start(words: object) -> float | None:
    """The start (ms) of a turn's first word, if it has a readable one."""
    if not isinstance(words, list) or not words or not isinstance(words[0], dict):
        return None
    start = words[0].get("start")
    return float(start) if _is_number(start) else None
