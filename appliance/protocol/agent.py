"""The Voice Agent API conversation as a sans-I/O state machine.

``AgentProtocol`` is a :class:`~appliance.protocol.vocabulary.SessionCore`:
it takes the connection events both cores share (``start``, ``opened``,
``connect_failed``, ``message``, ``closed``, ``tick``) and its own (a chunk of
microphone audio is ready, the speaker drained, a tool finished, the button
was pressed, ``stop``), and returns the shared actions (``Connect``,
``SendJson``, ``Close``, ``ReconnectAfter``, ``Notice``, ``Finish``) and its
own (play these bytes, flush the speaker, run a tool, a transcript).  It never
touches a socket, a thread, a clock or the speaker, so every ordering rule of
the protocol is testable with plain calls:

* ``session.update`` is the first message of a new session, ``session.resume``
  the first (and only setup) message of a resumed one;
* ``input.audio`` is only produced after ``session.ready``;
* ``reply.audio`` carries its PCM in ``data`` (``input.audio`` in ``audio``);
* ``tool.result`` goes out only after the ``reply.done`` of the reply that
  asked for it, and never when that reply was interrupted;
* on ``reply.done`` with ``status: interrupted`` the speaker is flushed;
* a dropped connection is resumed within the resume window, otherwise (or
  when the server says the session is gone) a new conversation starts;
* when to connect again is the shared
  :class:`~appliance.protocol.policy.ReconnectPolicy`'s answer; a wait that
  is its slow retry (credentials refused twice, a fatal answer) ends the
  conversation instead, since a person cannot wait minutes for a reply.

Time is always passed in (``now``, monotonic seconds), so timeouts are plain
arithmetic in tests.  The asyncio runner is ``appliance.agent``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import json
import logging
import random
from collections.abc import Callable
from typing import Any, ClassVar, Literal

from appliance.protocol.failures import ConnectFailure, Failure
from appliance.protocol.messages import (
    MAX_KIND_CHARS,
    Rejected,
    describe_failure,
    excerpt,
    parse_message,
)
from appliance.protocol.policy import ReconnectLimits, ReconnectPolicy
from appliance.protocol.vocabulary import (
    Close,
    Connect,
    Finish,
    Notice,
    ReconnectAfter,
    SendJson,
)

#: The Voice Agent API speaks PCM16 mono at 24 kHz both ways.
AGENT_SAMPLE_RATE = 24_000
SAMPLE_WIDTH_BYTES = 2
#: ``input.audio`` around its base64 (field order as the reference's example).
_INPUT_AUDIO_PREFIX = '{"type":"input.audio","audio":"'
_INPUT_AUDIO_SUFFIX = '"}'

#: ``session.error`` codes after which the session must not be resumed.
NO_RESUME_CODES = frozenset(
    {"session_expired", "session_forbidden", "session_not_found", "unauthorized"}
)
#: Codes that no reconnect can fix: the conversation ends with the error.
FATAL_CODES = frozenset({"session_forbidden", "agent_not_found", "invalid_config"})
#: ``unauthorized`` on this many connections in a row is fatal (one refused token is not).
MAX_AUTH_FAILURES = 3

#: What each documented ``session.error`` code means, for logs and the error event.
ERROR_MESSAGES: dict[str, str] = {
    "agent_not_found": "the agent does not exist",
    "at_capacity": "the voice agent service is at capacity; retrying",
    "audio_rate_violation": "microphone audio was sent faster than real time",
    "concurrency_exceeded": "too many concurrent voice agent sessions on this account",
    "immutable_field": "a setting that cannot change after the session started was changed",
    "internal_error": "the voice agent service had an internal error",
    "invalid_audio": "the service could not decode the microphone audio",
    "invalid_config": "the agent configuration was rejected (check the agent: section)",
    "invalid_format": "a message sent to the service was malformed",
    "invalid_value": "a value sent to the service was rejected",
    "session_expired": "the conversation expired on the service",
    "session_forbidden": "this credential may not use that conversation",
    "session_not_found": "the service no longer knows this conversation",
    "unauthorized": "the token or API key was rejected",
}


def describe_error(code: str, message: str = "") -> str:
    """A clear sentence for a ``session.error``: our meaning, then the server's words."""
    meaning = ERROR_MESSAGES.get(code, f"the voice agent reported error {code!r}")
    return f"{meaning} ({message})" if message and message != meaning else meaning


class Phase(enum.Enum):
    """Where the conversation's current connection stands."""

    DISCONNECTED = "disconnected"  # no socket (before the first, or between reconnects)
    CONNECTING = "connecting"  # Connect emitted, waiting for opened / connect_failed
    OPENING = "opening"  # socket open, setup sent, waiting for session.ready
    READY = "ready"  # audio flows
    ENDING = "ending"  # session.end sent, waiting for session.ended
    FINISHED = "finished"  # the conversation is over; nothing more to do


# --------------------------------------------------------------------------
# Actions: what the I/O layer must do.


@dataclasses.dataclass(frozen=True, slots=True)
class SendText:
    """Send one text frame that is already a JSON message (the microphone's ``input.audio``)."""

    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class Play:
    """Write 24 kHz PCM16 to the speaker."""

    pcm: bytes
    reply_id: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class FlushPlayback:
    """Drop everything queued for the speaker, at once."""

    reason: str  # "interrupted" (server barge-in) or "button"


@dataclasses.dataclass(frozen=True, slots=True)
class SpeakingChanged:
    """The agent started or stopped being audible (state LED, half-duplex mute)."""

    speaking: bool


@dataclasses.dataclass(frozen=True, slots=True)
class UserTranscript:
    text: str
    final: bool


@dataclasses.dataclass(frozen=True, slots=True)
class AgentTranscript:
    text: str
    reply_id: str | None
    interrupted: bool


@dataclasses.dataclass(frozen=True, slots=True)
class ReplyDone:
    reply_id: str | None
    status: str  # "completed" or "interrupted"


@dataclasses.dataclass(frozen=True, slots=True)
class CallTool:
    """Run a local tool; report back with :meth:`AgentProtocol.tool_finished`."""

    call_id: str
    name: str
    arguments: dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class SessionReady:
    session_id: str
    resumed: bool


@dataclasses.dataclass(frozen=True, slots=True)
class NewConversation:
    """The old session is gone; the next connection starts afresh (tell the user)."""

    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class SessionError:
    code: str
    message: str  # already a clear sentence (``describe_error``)
    fatal: bool


Action = (
    SendJson | SendText | Play | FlushPlayback | SpeakingChanged | UserTranscript | AgentTranscript
    | ReplyDone | CallTool | SessionReady | NewConversation | SessionError | Notice | Close
    | Connect | ReconnectAfter | Finish
)  # fmt: skip


# --------------------------------------------------------------------------
# The state machine


@dataclasses.dataclass
class ProtocolStats:
    """Counters for the conversation account and tests."""

    messages_received: int = 0
    garbled_messages: int = 0
    unknown_messages: int = 0
    audio_chunks_sent: int = 0
    muted_chunks_sent: int = 0
    reply_audio_bytes_played: int = 0
    reply_audio_chunks_dropped: int = 0
    user_turns: int = 0
    agent_replies: int = 0
    interrupted_replies: int = 0
    tool_calls: int = 0
    tool_results_sent: int = 0
    tool_results_dropped: int = 0
    connections: int = 0
    resumes: int = 0
    new_conversations: int = 0


#: How the microphone and the agent's voice share the room (``agent.echo``).
Echo = Literal["half_duplex", "full_duplex"]


@dataclasses.dataclass(frozen=True)
class AgentLimits:
    """The conversation's limits, named once (the ``agent:`` settings convert into these)."""

    #: A dropped session is resumed within this long of the drop; later a new one starts.
    resume_window_seconds: float = 30.0
    #: No turn, reply or tool call for this long ends the conversation (None: never).
    idle_timeout_seconds: float | None = 60.0
    #: The longest conversation (None: no limit).
    max_conversation_seconds: float | None = 1800.0
    #: How long to wait for ``session.ended`` after ``session.end``.
    end_timeout_seconds: float = 5.0
    #: Stop reconnecting after the service was unreachable this long.
    give_up_seconds: float = 60.0


DEFAULT_AGENT_LIMITS = AgentLimits()


class AgentProtocol:
    """One voice-agent conversation across any number of connections.

    Feed it events; execute the actions it returns, in order.  ``half_duplex``
    sends silence instead of the microphone while the agent is audible (a
    loudspeaker next to the microphone would otherwise talk to itself); the
    silence keeps the server's audio clock continuous, so its turn detection
    and timestamps never see a hole.
    """

    def __init__(
        self,
        session: dict[str, Any],
        *,
        echo: Echo = "half_duplex",
        limits: AgentLimits = DEFAULT_AGENT_LIMITS,
        reconnect: ReconnectLimits | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.session = session
        self.half_duplex = echo == "half_duplex"
        self.resume_window_seconds = limits.resume_window_seconds
        self.idle_timeout_seconds = limits.idle_timeout_seconds
        self.max_conversation_seconds = limits.max_conversation_seconds
        self.end_timeout_seconds = limits.end_timeout_seconds
        self.give_up_seconds = limits.give_up_seconds
        self.policy = ReconnectPolicy(reconnect, rng)

        self.phase = Phase.DISCONNECTED
        self.session_id: str | None = None
        self.session_ids: list[str] = []
        self.stats = ProtocolStats()
        self.finish_reason: str | None = None
        self.error: str | None = None

        self._auth_failures = 0  # consecutive connections refused as unauthorized
        self._resuming = False  # this connection sent session.resume
        self._resumable = True  # the server has not said "this session is gone"
        self._lost_at: float | None = None  # first drop/failure since the last session.ready
        self._attempt = 0  # connection attempts so far
        self._connect_at: float | None = None  # when the next Connect is due (disconnected)
        self._resume_next = False  # the next connection asks to resume
        self._fresh_audio = False  # this connection got microphone audio through
        self._started_at: float | None = None
        self._last_activity: float | None = None
        self._end_deadline: float | None = None
        self._end_reason = "stopped"

        # Reply and playback state.  Replies are keyed by reply_id, or by a local
        # key when the server sends none, so "which reply is this" is always answerable.
        self._reply_id: str | None = None  # key of the reply in progress or last started
        self._in_reply = False
        self._reply_counter = 0
        self._drop_unlabelled = False  # audio without reply_id after an interruption is stale
        self._suppressed_replies: set[str | None] = set()  # replies the user cut off locally
        self._speaking = False  # agent audio is (or may still be) audible
        self._awaiting_drain = False  # reply done; unmute when the speaker has drained
        self._silence = b""

        # Tools: call_id -> reply it belongs to; results waiting for that reply's reply.done.
        self._call_reply: dict[str, str | None] = {}
        self._open_replies: set[str | None] = set()  # replies whose reply.done has not come
        self._pending_results: dict[str, tuple[str | None, str]] = {}
        self._interrupted_replies: set[str | None] = set()

    # ----------------------------------------------------------- properties

    @property
    def ready(self) -> bool:
        """True when ``input.audio`` may be sent."""
        return self.phase is Phase.READY

    @property
    def finished(self) -> bool:
        return self.phase is Phase.FINISHED

    @property
    def speaking(self) -> bool:
        """The agent is audible (or its reply has not drained from the speaker yet)."""
        return self._speaking

    @property
    def muted(self) -> bool:
        """The microphone is replaced by silence toward the agent (half duplex only)."""
        return self.half_duplex and self._speaking

    @property
    def awaiting_drain(self) -> bool:
        """The runner should report :meth:`playback_drained` when the speaker is empty."""
        return self._awaiting_drain

    # --------------------------------------------------------------- events

    def start(self, now: float) -> list[Action]:
        """The conversation should begin: the first connection, at once."""
        if self.phase is not Phase.DISCONNECTED or self._attempt:
            return []
        return self._connect()

    def opened(self, now: float) -> list[Action]:
        """The socket is open: send the setup message at once."""
        if self.phase is Phase.FINISHED:
            return [Close(reason="conversation finished")]
        if self.phase is not Phase.CONNECTING:
            return []
        self.stats.connections += 1
        self.phase = Phase.OPENING
        self._fresh_audio = False
        if self._started_at is None:
            self._started_at = now
            self._last_activity = now
        if self.session_id is not None and self._resumable:
            self._resuming = True
            return [SendJson({"type": "session.resume", "session_id": self.session_id})]
        self._resuming = False
        return [SendJson({"type": "session.update", "session": self.session})]

    def connect_failed(self, now: float, failure: Failure) -> list[Action]:
        """No connection was made: wait as the policy says, or end when waiting cannot help.

        A conversation cannot wait minutes for a person: the policy's slow retry
        (a credential refused twice, a fatal answer) ends it with the error.
        """
        if self.phase is not Phase.CONNECTING:
            return []
        self.phase = Phase.DISCONNECTED
        wait = self.policy.after_failure(failure)
        if wait.slow:
            what = (
                "the voice agent credentials were refused"
                if failure.kind is ConnectFailure.AUTH
                else "the voice agent cannot be reached"
            )
            self.error = f"{what} ({failure.detail})"
            return self._finish("error")
        why = f"connect failed ({failure.detail})"
        return self._after_disconnect(now, wait.seconds, why, failure.kind is ConnectFailure.AUTH)

    def message(self, now: float, data: str | bytes) -> list[Action]:
        """A frame from the server."""
        self.stats.messages_received += 1
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError:
                return self._garbled("a binary frame that is not UTF-8 text")
        message = parse_message(data)
        if isinstance(message, Rejected):
            return self._garbled(message.reason)
        kind = message.get("type")
        if not isinstance(kind, str):
            return self._garbled("a JSON message without a type")
        handler = self._handlers.get(kind)
        if handler is None:
            self.stats.unknown_messages += 1  # the service adds new events; ignore them
            return []
        try:
            return handler(self, message, now)
        except Exception as exc:  # one bad message never ends the conversation
            return self._garbled(describe_failure(kind, exc))

    def audio(self, pcm: bytes) -> list[Action]:
        """Microphone audio (24 kHz PCM16) ready to go: an ``input.audio``, or nothing.

        Callers should only read audio when :attr:`ready`; audio offered earlier
        is refused (returns nothing) so it can stay in the ring until then.
        """
        if self.phase is not Phase.READY or not pcm:
            return []
        if self.muted:
            if len(self._silence) != len(pcm):
                self._silence = bytes(len(pcm))
            pcm = self._silence
            self.stats.muted_chunks_sent += 1
        self.stats.audio_chunks_sent += 1
        self._fresh_audio = True
        # Sent every chunk: built around its base64, which needs no JSON escaping, so the
        # JSON encoder does not scan kilobytes of it each time.
        encoded = binascii.b2a_base64(pcm, newline=False).decode("ascii")
        return [SendText(_INPUT_AUDIO_PREFIX + encoded + _INPUT_AUDIO_SUFFIX)]

    def playback_drained(self, now: float) -> list[Action]:
        """The speaker has played everything it was given."""
        if not self._awaiting_drain:
            return []
        self._awaiting_drain = False
        self._last_activity = now
        return self._set_speaking(False)

    def interrupt(self, now: float) -> list[Action]:
        """The button was pressed while the agent spoke: silence it, keep listening.

        The rest of the current reply's audio is dropped locally; the server is
        not told (the API has no "cancel reply" message), so its tool calls and
        ``reply.done`` are still honoured.
        """
        if not self._speaking:
            return []
        self._last_activity = now
        if self._in_reply:
            self._suppressed_replies.add(self._reply_id)
        self._drop_unlabelled = True
        self._awaiting_drain = False
        return [FlushPlayback("button"), *self._set_speaking(False)]

    def tool_finished(self, call_id: str, result: object, now: float) -> list[Action]:
        """A local tool returned ``result`` (any JSON value) for ``call_id``."""
        if call_id not in self._call_reply:  # answered already, or never asked for
            return [Notice(logging.WARNING, f"tool result {call_id} dropped: no such call open")]
        reply = self._call_reply.pop(call_id)
        encoded = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
        if reply in self._interrupted_replies:
            self.stats.tool_results_dropped += 1
            note = f"tool result {call_id} dropped: its reply was interrupted"
            return [Notice(logging.INFO, note)]
        if reply in self._open_replies or self.phase is not Phase.READY:
            self._pending_results[call_id] = (reply, encoded)
            return []
        self._last_activity = now
        return [self._tool_result(call_id, encoded)]

    def stop(self, now: float, reason: str = "stopped") -> list[Action]:
        """End the conversation: ``session.end``, then wait (bounded) for ``session.ended``.

        With no session open (between connections, or still connecting) it ends at once.
        """
        if self.phase in (Phase.ENDING, Phase.FINISHED):
            return []
        self._end_reason = reason
        if self.phase in (Phase.DISCONNECTED, Phase.CONNECTING):
            return self._finish(reason)
        self.phase = Phase.ENDING
        self._end_deadline = now + self.end_timeout_seconds
        return [SendJson({"type": "session.end"})]

    def tick(self, now: float) -> list[Action]:
        """Time passed: the next connection, idle timeout, maximum length, ``session.ended``."""
        phase = self.phase
        if phase is Phase.ENDING:
            if self._end_deadline is not None and now >= self._end_deadline:
                actions: list[Action] = [
                    Notice(logging.WARNING, "no session.ended in time; closing anyway")
                ]
                return actions + self._finish(self._end_reason) + [Close(reason="end timeout")]
            return []
        if self._connect_at is not None:  # set only while disconnected
            if now < self._connect_at:
                return []
            return self._connect()
        if phase is Phase.READY:
            self.policy.still_up(now)
        if phase is Phase.FINISHED or self._started_at is None:
            return []
        limit = self.max_conversation_seconds
        if limit is not None and now - self._started_at >= limit:
            note = Notice(logging.INFO, "maximum conversation length reached")
            return [note, *self.stop(now, "max_length")]
        idle_at = self._idle_deadline()
        if idle_at is not None and now >= idle_at:
            return [
                Notice(logging.INFO, "conversation idle; ending it"),
                *self.stop(now, "idle"),
            ]
        return []

    def next_timer(self) -> float | None:
        """The earliest time :meth:`tick` may have something to do; None: nothing is timed.

        Lets the runner sleep until then instead of ticking on a fixed period.
        """
        if self.phase is Phase.ENDING:
            return self._end_deadline
        if self._connect_at is not None:
            return self._connect_at
        if self.phase is Phase.FINISHED or self._started_at is None:
            return None
        deadlines: list[float] = []
        if self.max_conversation_seconds is not None:
            deadlines.append(self._started_at + self.max_conversation_seconds)
        idle_at = self._idle_deadline()
        if idle_at is not None:
            deadlines.append(idle_at)
        return min(deadlines, default=None)

    def _idle_deadline(self) -> float | None:
        """When the idle timeout ends the conversation; None while it cannot (agent busy)."""
        idle = self.idle_timeout_seconds
        if (
            idle is None
            or self._last_activity is None
            or self._speaking
            or self._in_reply
            or self._call_reply
        ):
            return None
        return self._last_activity + idle

    def closed(self, now: float, code: int | None, reason: str = "") -> list[Action]:
        """The socket closed (``code`` None: the network dropped it): resume, start anew, or end."""
        phase = self.phase
        if phase in (Phase.FINISHED, Phase.DISCONNECTED, Phase.CONNECTING):
            return []
        if phase is Phase.ENDING:
            return self._finish(self._end_reason)
        why = "connection dropped" if code is None else f"closed {code}"
        if reason:
            why += f" ({excerpt(reason)})"
        self.phase = Phase.DISCONNECTED
        # A reply cut off by the drop will never get its reply.done on this socket.
        if self._in_reply:
            self._open_replies.discard(self._reply_id)
            self._in_reply = False
        if self._speaking:
            self._awaiting_drain = True  # what was already queued still plays out
        wait = self.policy.after_drop(now, self._fresh_audio)
        return self._after_disconnect(now, wait.seconds, why)

    # ------------------------------------------------------ message handlers

    def _on_session_ready(self, message: dict[str, Any], now: float) -> list[Action]:
        session_id = message.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            raise ValueError("session.ready without session_id")
        resumed = self._resuming and session_id == self.session_id
        if self.phase is Phase.OPENING:
            self.phase = Phase.READY
            self.policy.began(now)
        self.session_id = session_id
        if session_id not in self.session_ids:
            self.session_ids.append(session_id)
        self._resumable = True
        self._lost_at = None
        self._auth_failures = 0
        self._last_activity = now
        if resumed:
            self.stats.resumes += 1
        actions: list[Action] = [SessionReady(session_id, resumed)]
        # Results that finished while we were away, for replies that did complete.
        for call_id, (_reply, encoded) in list(self._pending_results.items()):
            if _reply not in self._open_replies:
                del self._pending_results[call_id]
                actions.append(self._tool_result(call_id, encoded))
        return actions

    def _on_session_updated(self, message: dict[str, Any], now: float) -> list[Action]:
        return []

    def _on_speech(self, message: dict[str, Any], now: float) -> list[Action]:
        self._last_activity = now
        return []

    def _on_user_delta(self, message: dict[str, Any], now: float) -> list[Action]:
        self._last_activity = now
        text = _text_of(message)
        return [UserTranscript(text, final=False)] if text else []

    def _on_user(self, message: dict[str, Any], now: float) -> list[Action]:
        text = _text_of(message)  # a garbled turn is not counted
        self._last_activity = now
        self.stats.user_turns += 1
        return [UserTranscript(text, final=True)]

    def _on_reply_started(self, message: dict[str, Any], now: float) -> list[Action]:
        self._last_activity = now
        self._reply_counter += 1
        self._reply_id = _optional_str(message.get("reply_id")) or f"#local-{self._reply_counter}"
        self._in_reply = True
        self._drop_unlabelled = False
        self._open_replies.add(self._reply_id)
        return []

    def _on_reply_audio(self, message: dict[str, Any], now: float) -> list[Action]:
        reply_id = _optional_str(message.get("reply_id"))
        unlabelled = reply_id is None
        if unlabelled and self._in_reply:
            reply_id = self._reply_id
        data = message["data"]
        if not isinstance(data, str):
            raise TypeError("reply.audio data is not text")
        if (
            (unlabelled and not self._in_reply and self._drop_unlabelled)
            or reply_id in self._suppressed_replies
            or reply_id in self._interrupted_replies
            or self.phase in (Phase.ENDING, Phase.FINISHED)
        ):
            self.stats.reply_audio_chunks_dropped += 1
            return []
        pcm = base64.b64decode(data, validate=True)
        if len(pcm) % SAMPLE_WIDTH_BYTES:
            pcm = pcm[: len(pcm) - len(pcm) % SAMPLE_WIDTH_BYTES]
        if not pcm:
            return []
        self._last_activity = now
        self.stats.reply_audio_bytes_played += len(pcm)
        self._awaiting_drain = False
        return [*self._set_speaking(True), Play(pcm, reply_id)]

    def _on_transcript_agent(self, message: dict[str, Any], now: float) -> list[Action]:
        self._last_activity = now
        reply_id = _optional_str(message.get("reply_id")) or self._reply_id
        interrupted = bool(message.get("interrupted")) or reply_id in self._suppressed_replies
        return [AgentTranscript(_text_of(message), reply_id, interrupted)]

    def _on_reply_done(self, message: dict[str, Any], now: float) -> list[Action]:
        self._last_activity = now
        reply_id = _optional_str(message.get("reply_id")) or self._reply_id
        status = message.get("status") or "completed"
        if not isinstance(status, str):
            raise TypeError("reply.done status is not text")
        if reply_id == self._reply_id:
            self._in_reply = False
        self._open_replies.discard(reply_id)
        self.stats.agent_replies += 1
        actions: list[Action] = [ReplyDone(reply_id, status)]
        if status == "interrupted":
            self.stats.interrupted_replies += 1
            self._interrupted_replies.add(reply_id)
            self._drop_unlabelled = True
            actions.append(FlushPlayback("interrupted"))
            self._awaiting_drain = False
            actions += self._set_speaking(False)
            for call_id, (reply, _encoded) in list(self._pending_results.items()):
                if reply == reply_id:
                    del self._pending_results[call_id]
                    self.stats.tool_results_dropped += 1
                    actions.append(
                        Notice(logging.INFO, f"tool result {call_id} dropped: reply interrupted")
                    )
            return actions
        if self._speaking:
            self._awaiting_drain = True  # unmute once the speaker has played the tail
        for call_id, (reply, encoded) in list(self._pending_results.items()):
            if reply == reply_id or reply not in self._open_replies:
                del self._pending_results[call_id]
                actions.append(self._tool_result(call_id, encoded))
        return actions

    def _on_tool_call(self, message: dict[str, Any], now: float) -> list[Action]:
        self._last_activity = now
        call_id = message["call_id"]
        name = message["name"]
        arguments = message.get("arguments") or {}
        if isinstance(arguments, str):  # be lenient: some servers send the JSON as text
            parsed = parse_message(arguments) if arguments.strip() else {}
            if isinstance(parsed, Rejected):
                raise ValueError(f"tool.call arguments: {parsed.reason}")
            arguments = parsed
        if not isinstance(call_id, str) or not isinstance(name, str):
            raise TypeError("tool.call call_id/name are not text")
        if not isinstance(arguments, dict):
            raise TypeError("tool.call arguments are not an object")
        self.stats.tool_calls += 1
        self._call_reply[call_id] = self._reply_id if self._in_reply else None
        return [CallTool(call_id, name, arguments)]

    def _on_session_error(self, message: dict[str, Any], now: float) -> list[Action]:
        code = excerpt(str(message.get("code") or "unknown"), MAX_KIND_CHARS)
        text = describe_error(code, excerpt(str(message.get("message") or "")))
        if code == "unauthorized":
            self._auth_failures += 1
        fatal = code in FATAL_CODES or self._auth_failures >= MAX_AUTH_FAILURES
        if code in NO_RESUME_CODES:
            self._resumable = False
        actions: list[Action] = [SessionError(code, text, fatal)]
        if fatal:
            self.error = text
            actions += [*self._finish("error"), Close(reason=code)]
        elif code in NO_RESUME_CODES and self._resuming:
            # The resume was refused; session.update must be a connection's first
            # message, so a new session needs a new connection (and token).
            actions.append(Close(reason=code))
        return actions

    def _on_session_ended(self, message: dict[str, Any], now: float) -> list[Action]:
        reason = self._end_reason if self.phase is Phase.ENDING else "ended_by_server"
        return [*self._finish(reason), Close(reason="session ended")]

    _handlers: ClassVar[
        dict[str, Callable[[AgentProtocol, dict[str, Any], float], list[Action]]]
    ] = {
        "session.ready": _on_session_ready,
        "session.updated": _on_session_updated,
        "input.speech.started": _on_speech,
        "input.speech.stopped": _on_speech,
        "transcript.user.delta": _on_user_delta,
        "transcript.user": _on_user,
        "reply.started": _on_reply_started,
        "reply.audio": _on_reply_audio,
        "transcript.agent": _on_transcript_agent,
        "reply.done": _on_reply_done,
        "tool.call": _on_tool_call,
        "session.error": _on_session_error,
        "session.ended": _on_session_ended,
    }

    # -------------------------------------------------------------- helpers

    def _connect(self) -> list[Action]:
        self._attempt += 1
        self._connect_at = None
        self.phase = Phase.CONNECTING
        return [Connect(self._attempt, resume=self._resume_next)]

    def _after_disconnect(
        self, now: float, delay: float, why: str, auth: bool = False
    ) -> list[Action]:
        """Between connections: give up, or plan the next one (resumed, or a new conversation)."""
        if self._lost_at is None:
            self._lost_at = now
        away = now - self._lost_at
        if away > self.give_up_seconds:
            self.error = f"the voice agent could not be reached for {away:.0f} s (last: {why})"
            return self._finish("error")
        actions: list[Action] = []
        self._resume_next = False
        if self.session_id is not None:
            if self._resumable and away + delay <= self.resume_window_seconds:
                self._resume_next = True
            else:
                gone = "resume window passed" if self._resumable else "the session is gone"
                actions += self._start_new_conversation(gone)
        self._connect_at = now + delay
        kind = "resuming" if self._resume_next else "reconnecting"
        return [
            *actions,
            Notice(logging.WARNING, f"voice agent {why}; {kind} in {delay:.2f} s"),
            ReconnectAfter(delay, why, auth),
        ]

    def _garbled(self, what: str) -> list[Action]:
        self.stats.garbled_messages += 1
        note = f"ignored a garbled message from the voice agent: {what}"
        return [Notice(logging.WARNING, note)]

    def _set_speaking(self, speaking: bool) -> list[Action]:
        if self._speaking == speaking:
            return []
        self._speaking = speaking
        return [SpeakingChanged(speaking)]

    def _tool_result(self, call_id: str, encoded: str) -> SendJson:
        self.stats.tool_results_sent += 1
        return SendJson({"type": "tool.result", "call_id": call_id, "result": encoded})

    def _start_new_conversation(self, reason: str) -> list[Action]:
        self.session_id = None
        self._lost_at = None
        self._pending_results.clear()
        self._call_reply.clear()
        self._open_replies.clear()
        self.stats.new_conversations += 1
        return [NewConversation(reason)]

    def _finish(self, reason: str) -> list[Action]:
        if self.phase is Phase.FINISHED:
            return []
        self.phase = Phase.FINISHED
        self.finish_reason = reason
        actions: list[Action] = []
        if self._speaking:
            self._awaiting_drain = False
            actions += self._set_speaking(False)
        dropped = len(self._pending_results)
        if dropped:
            self.stats.tool_results_dropped += dropped
            self._pending_results.clear()
        self._connect_at = None
        return [*actions, Finish(reason, self.error)]


def _text_of(message: dict[str, Any]) -> str:
    text = message.get("text", message.get("transcript", ""))
    if not isinstance(text, str):
        raise TypeError("transcript text is not text")
    return text


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
