"""Voice Agent API (``/v1/ws``): session lifecycle, DTMF "conversation", tools, resume.

The agent hears DTMF digits (the shared recogniser) and speaks DTMF digits
(24 kHz PCM16 that tests can decode): the greeting and replies are digit
strings from ``AgentScript`` (default reply: echo what the user said).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import WSMsgType, web

from appliance import dtmf
from appliance.emulator import recognizer
from appliance.emulator.auth import websocket_auth
from appliance.emulator.connection import Connection, websocket_response
from appliance.emulator.rules import pacing_exceeded
from appliance.emulator.state import SessionRecord
from appliance.emulator.violations import PACING

if TYPE_CHECKING:
    from appliance.emulator.server import EmulatorApp

AGENT_RATE = 24000
VAD_FRAME = 480  # 20 ms at 24 kHz
#: RMS (fraction of full scale) that counts as speech at vad_threshold = 1.0.
VAD_FULL_SCALE_RMS = 0.02
VOICES = frozenset(
    [
        "ivy",
        "james",
        "tyler",
        "winter",
        "sam",
        "mia",
        "bella",
        "david",
        "jack",
        "kyle",
        "helen",
        "martha",
        "river",
        "emma",
        "victor",
        "eleanor",
        "sophie",
        "oliver",
        "arjun",
        "ethan",
        "mei",
        "dmitri",
        "lukas",
        "lena",
        "pierre",
        "mina",
        "joon",
        "ren",
        "hana",
        "giulia",
        "luca",
        "lucia",
        "mateo",
        "diego",
    ]
)
CLIENT_TYPES = frozenset(
    {
        "session.update",
        "session.resume",
        "input.audio",
        "tool.result",
        "reply.create",
        "session.end",
    }
)
#: session.error codes after which the connection is closed (and must not resume).
FATAL_CLOSE_CODE = 1008


class ConfigError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _check_turn_detection(td: Any) -> None:
    if not isinstance(td, dict):
        raise ConfigError("invalid_config", "input.turn_detection must be an object")
    for key, value in td.items():
        if key == "vad_threshold":
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
                raise ConfigError("invalid_value", "vad_threshold must be a number in 0..1")
        elif key in ("min_silence", "max_silence"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError("invalid_value", f"{key} must be a non-negative integer (ms)")
        elif key == "interrupt_response":
            if not isinstance(value, bool):
                raise ConfigError("invalid_value", "interrupt_response must be a boolean")
        else:
            raise ConfigError("invalid_config", f"unknown turn_detection field {key}")


def validate_session_config(session: Any) -> dict[str, Any]:
    """Check a ``session.update`` payload; raise ConfigError with the service's code."""
    if not isinstance(session, dict):
        raise ConfigError("invalid_format", "session.update needs a 'session' object")
    allowed = {"system_prompt", "greeting", "input", "output", "tools"}
    unknown = sorted(set(session) - allowed)
    if unknown:
        raise ConfigError("invalid_config", f"unknown session field {unknown[0]}")
    for key in ("system_prompt", "greeting"):
        if key in session and not isinstance(session[key], str):
            raise ConfigError("invalid_value", f"{key} must be a string")
    inp = session.get("input", {})
    if not isinstance(inp, dict):
        raise ConfigError("invalid_config", "input must be an object")
    for key, value in inp.items():
        if key == "format":
            enc = value.get("encoding", "audio/pcm") if isinstance(value, dict) else None
            if enc != "audio/pcm":
                raise ConfigError("invalid_config", "input.format.encoding must be audio/pcm")
            if isinstance(value, dict) and value.get("sample_rate", AGENT_RATE) != AGENT_RATE:
                raise ConfigError("invalid_config", "input audio must be 24000 Hz PCM16")
        elif key == "keyterms":
            if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                raise ConfigError("invalid_value", "input.keyterms must be a list of strings")
        elif key == "turn_detection":
            _check_turn_detection(value)
        else:
            raise ConfigError("invalid_config", f"unknown input field {key}")
    out = session.get("output", {})
    if not isinstance(out, dict):
        raise ConfigError("invalid_config", "output must be an object")
    for key, value in out.items():
        if key == "voice":
            if value not in VOICES:
                raise ConfigError("invalid_config", f"unknown voice {str(value)[:40]!r}")
        elif key == "format":
            enc = value.get("encoding", "audio/pcm") if isinstance(value, dict) else None
            if enc != "audio/pcm":
                raise ConfigError(
                    "invalid_config", "output.format.encoding: the emulator serves audio/pcm only"
                )
        elif key == "volume":
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not 0 <= value <= 100
            ):
                raise ConfigError("invalid_value", "output.volume must be 0..100")
        else:
            raise ConfigError("invalid_config", f"unknown output field {key}")
    tools = session.get("tools", [])
    if not isinstance(tools, list):
        raise ConfigError("invalid_config", "tools must be a list")
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise ConfigError("invalid_config", "each tool needs type 'function'")
        if "function" in tool:
            raise ConfigError(
                "invalid_config", "tools use the flat schema {type, name, description, parameters}"
            )
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise ConfigError("invalid_config", "each tool needs a name")
        if "parameters" in tool and not isinstance(tool["parameters"], dict):
            raise ConfigError("invalid_config", "tool parameters must be a JSON schema object")
    return session


@dataclass
class AgentSession:
    """A voice-agent session; outlives a dropped connection for the resume window."""

    id: str
    config: dict[str, Any]
    max_session_s: float
    created: float = field(default_factory=time.monotonic)
    expires_at: float = 0.0
    conn: Connection | None = None
    dropped_at: float | None = None
    ended: bool = False
    pending_call: str | None = None
    pending_tool: str | None = None
    last_user_digits: str = ""

    def turn_setting(self, name: str, default: Any) -> Any:
        td = self.config.get("input", {}).get("turn_detection", {})
        return td.get(name, default)


class AgentConnection:
    """Runs one WebSocket against an AgentSession (new or resumed)."""

    def __init__(self, emu: EmulatorApp, conn: Connection) -> None:
        self.emu = emu
        self.conn = conn
        self.session: AgentSession | None = None
        self.decoder = dtmf.DtmfDecoder(AGENT_RATE)
        self.user_words: list[recognizer.Word] = []
        self.vad_rest = np.zeros(0, dtype=np.int16)
        self.speaking = False
        self.silence_ms = 0
        self.received_samples = 0
        #: Pacing counts from the moment session.ready went out on this connection.
        self.ready_at: float | None = None
        self.reply_task: asyncio.Task | None = None
        self.reply_interrupt = asyncio.Event()
        self.done = False
        #: The client said goodbye (session.end); a session without one was abandoned.
        self.client_ended = False

    # -- outbound helpers ---------------------------------------------------
    async def error(self, code: str, message: str, fatal: bool = False) -> None:
        await self.conn.send_json({"type": "session.error", "code": code, "message": message})
        if fatal:
            self.done = True
            await self.conn.close(FATAL_CLOSE_CODE, f"{code}: {message}")

    # -- message dispatch ---------------------------------------------------
    async def on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            self.conn.log_in("text", text[:200])
            await self.error("invalid_format", "message is not valid JSON")
            return
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "input.audio":
            self.conn.log_in("json", {"type": kind, "bytes": len(str(message.get("audio", "")))})
        else:
            self.conn.log_in("json", message)
        if kind not in CLIENT_TYPES:
            await self.error("invalid_format", f"unknown message type {str(kind)[:40]!r}")
            return
        if self.session is None:
            if kind == "session.update":
                await self.start(message)
            elif kind == "session.resume":
                await self.resume(message)
            else:
                await self.error(
                    "invalid_format",
                    f"{kind} before session.ready: send session.update first",
                    fatal=True,
                )
            return
        handler = {
            "session.update": self.update,
            "session.resume": self.resume_again,
            "input.audio": self.on_audio,
            "tool.result": self.on_tool_result,
            "reply.create": self.on_reply_create,
            "session.end": self.end,
        }[kind]
        await handler(message)

    async def start(self, message: dict) -> None:
        try:
            config = validate_session_config(message.get("session"))
        except ConfigError as exc:
            await self.error(exc.code, str(exc), fatal=True)
            return
        max_s = self.conn_max_session_s
        session = AgentSession(
            id=f"sess_{secrets.token_hex(12)}", config=config, max_session_s=max_s
        )
        session.expires_at = session.created + self.emu.config.scaled(max_s)
        self.emu.agent_sessions[session.id] = session
        await self.attach(session)
        greeting = config.get("greeting")
        if greeting:
            self.start_reply(self.emu.config.agent_script.greeting_digits, greeting)

    def _mark_ready(self) -> None:
        self.ready_at = time.monotonic()

    async def attach(self, session: AgentSession) -> None:
        if session.conn is not None and session.conn is not self.conn:
            session.conn.drop()  # a stale connection the client has given up on
        session.conn = self.conn
        session.dropped_at = None
        self.session = session
        self.conn.record.id = session.id
        # Pacing counts from writing session.ready (a client counts from receiving it).
        self.ready_at = time.monotonic()  # never unset once the session is attached
        await self.conn.send_json(
            {"type": "session.ready", "session_id": session.id}, on_write=self._mark_ready
        )
        self.emu.apply_next_session_fault(self.conn)

    async def resume(self, message: dict) -> None:
        session = self.emu.agent_sessions.get(str(message.get("session_id")))
        if session is None or session.ended:
            await self.error("session_not_found", "no such session to resume", fatal=True)
            return
        now = time.monotonic()
        window = self.emu.config.scaled(self.emu.config.agent_resume_window_s)
        if now >= session.expires_at or (
            session.dropped_at is not None and now - session.dropped_at > window
        ):
            session.ended = True
            await self.error("session_expired", "the session can no longer be resumed", fatal=True)
            return
        await self.attach(session)

    async def resume_again(self, message: dict) -> None:
        await self.error("invalid_format", "session already active on this connection")

    async def update(self, message: dict) -> None:
        assert self.session is not None
        try:
            config = validate_session_config(message.get("session"))
        except ConfigError as exc:
            await self.error(exc.code, str(exc))
            return
        for key in ("greeting", "output"):
            if key in config and config[key] != self.session.config.get(key):
                await self.error("immutable_field", f"{key} cannot change after session.ready")
                return
        for key, value in config.items():
            if key == "input" and isinstance(value, dict):
                merged = dict(self.session.config.get("input", {}))
                merged.update(value)
                self.session.config["input"] = merged
            else:
                self.session.config[key] = value
        await self.conn.send_json({"type": "session.updated"})

    async def end(self, message: dict) -> None:
        assert self.session is not None
        self.client_ended = True
        self.session.ended = True
        self.cancel_reply()
        await self.conn.send_json({"type": "session.ended", "session_id": self.session.id})
        self.done = True
        await self.conn.close(1000, "session ended")

    # -- audio in -------------------------------------------------------------
    async def on_audio(self, message: dict) -> None:
        raw = message.get("audio")
        try:
            data = base64.b64decode(raw, validate=True) if isinstance(raw, str) else None
        except (binascii.Error, ValueError):
            data = None
        if not data or len(data) % 2:
            await self.error("invalid_audio", "audio must be base64 of 24 kHz PCM16 mono samples")
            return
        samples = np.frombuffer(data, dtype="<i2").astype(np.int16)
        assert self.ready_at is not None and self.session is not None
        self.received_samples += samples.size
        received_s = self.received_samples / AGENT_RATE
        elapsed = time.monotonic() - self.ready_at
        cfg = self.emu.config
        if pacing_exceeded(received_s, elapsed, cfg.rate_allowance, cfg.max_lead_s):
            detail = f"Received {received_s:.1f} sec. audio in {elapsed:.1f} sec"
            self.emu.state.counters["rate_violations"] += 1
            self.emu.state.record_violation(
                PACING,
                "agent",
                detail,
                session=self.session.id,
                received_s=received_s,
                elapsed_s=elapsed,
            )
            await self.error("audio_rate_violation", detail, fatal=True)
            return
        self.conn.record.audio_chunks.append(samples)
        for event in self.decoder.feed(samples):
            self.user_words.append(recognizer.word_for(event))
            await self.conn.send_json(
                {"type": "transcript.user.delta", "text": recognizer.transcript_of(self.user_words)}
            )
        await self._vad(samples)

    async def _vad(self, samples: np.ndarray) -> None:
        assert self.session is not None
        data = np.concatenate([self.vad_rest, samples]) if self.vad_rest.size else samples
        whole = data.size // VAD_FRAME * VAD_FRAME
        self.vad_rest = data[whole:]
        if whole == 0:
            return
        frames = data[:whole].astype(np.float64).reshape(-1, VAD_FRAME)
        rms = np.sqrt(np.mean(frames * frames, axis=1)) / 32768.0
        threshold = VAD_FULL_SCALE_RMS * float(self.session.turn_setting("vad_threshold", 0.5))
        cfg = self.emu.config
        min_silence = int(
            self.session.turn_setting("min_silence", cfg.agent_default_min_silence_ms)
        )
        for level in rms:
            if level >= threshold:
                self.silence_ms = 0
                if not self.speaking:
                    self.speaking = True
                    await self.conn.send_json({"type": "input.speech.started"})
                    if self.reply_task is not None and self.session.turn_setting(
                        "interrupt_response", True
                    ):
                        self.reply_interrupt.set()
            elif self.speaking:
                self.silence_ms += 20
                if self.silence_ms >= min_silence and self.decoder.active_digit is None:
                    self.speaking = False
                    await self.conn.send_json({"type": "input.speech.stopped"})
                    await self.end_user_turn()

    async def end_user_turn(self) -> None:
        assert self.session is not None
        words, self.user_words = self.user_words, []
        if not words:
            return
        text = recognizer.transcript_of(words)
        digits = "".join(w.digit for w in words)
        self.session.last_user_digits = digits
        await self.conn.send_json(
            {"type": "transcript.user", "text": text, "item_id": f"item_{secrets.token_hex(6)}"}
        )
        trigger = self.emu.config.agent_script.tool_triggers.get(digits)
        tool_names = {t.get("name") for t in self.session.config.get("tools", [])}
        if trigger is not None and trigger[0] in tool_names:
            await self.call_tool(*trigger)
            return
        script = self.emu.config.agent_script
        reply = script.reply_digits if script.reply_digits is not None else digits
        self.start_reply(reply, None)

    # -- tools ----------------------------------------------------------------
    async def call_tool(self, name: str, arguments: dict) -> None:
        assert self.session is not None
        reply_id = f"reply_{secrets.token_hex(6)}"
        call_id = f"call_{secrets.token_hex(6)}"
        self.session.pending_call = call_id
        self.session.pending_tool = name
        await self.conn.send_json({"type": "reply.started", "reply_id": reply_id})
        await self.conn.send_json(
            {"type": "tool.call", "call_id": call_id, "name": name, "arguments": arguments}
        )
        await self.conn.send_json(
            {"type": "reply.done", "reply_id": reply_id, "status": "completed"}
        )

    async def on_tool_result(self, message: dict) -> None:
        assert self.session is not None
        call_id = message.get("call_id")
        if call_id is None or call_id != self.session.pending_call:
            await self.error("invalid_value", "tool.result for an unknown call_id")
            return
        result = message.get("result")
        if not isinstance(result, str):
            await self.error("invalid_value", "tool.result 'result' must be a JSON-encoded string")
            return
        self.session.pending_call = None
        digits = "".join(ch for ch in result if ch in "0123456789*#")
        self.start_reply(digits or "0", None)

    async def on_reply_create(self, message: dict) -> None:
        assert self.session is not None
        script = self.emu.config.agent_script
        digits = script.reply_digits or self.session.last_user_digits or "0"
        self.start_reply(digits, None)

    # -- audio out --------------------------------------------------------------
    def start_reply(self, digits: str, text: str | None) -> None:
        self.cancel_reply()
        self.reply_interrupt = asyncio.Event()
        self.reply_task = asyncio.get_running_loop().create_task(
            self._reply(digits, text, self.reply_interrupt)
        )

    def cancel_reply(self) -> None:
        if self.reply_task is not None:
            self.reply_task.cancel()
            self.reply_task = None

    async def _reply(self, digits: str, text: str | None, interrupt: asyncio.Event) -> None:
        cfg = self.emu.config
        reply_id = f"reply_{secrets.token_hex(6)}"
        spoken = (
            text
            if text is not None
            else recognizer.transcript_of(
                [recognizer.Word(recognizer.DIGIT_WORDS[d], 0, 0, d) for d in digits if d != " "]
            )
        )
        audio = dtmf.generate(digits, AGENT_RATE, lead_ms=100, trail_ms=100)
        step = AGENT_RATE * cfg.agent_reply_chunk_ms // 1000
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        interrupted = False
        await self.conn.send_json({"type": "reply.started", "reply_id": reply_id})
        for n, i in enumerate(range(0, audio.size, step)):
            due = t0 + n * step / AGENT_RATE - cfg.agent_reply_lead_s
            if await self._wait(interrupt, due - loop.time()):
                interrupted = True
                break
            payload = base64.b64encode(audio[i : i + step].astype("<i2").tobytes()).decode()
            await self.conn.send_json(
                {"type": "reply.audio", "reply_id": reply_id, "data": payload}
            )
        if not interrupted:
            # reply.done once the audio would have finished playing: barge-in until then.
            interrupted = await self._wait(interrupt, t0 + audio.size / AGENT_RATE - loop.time())
        await self.conn.send_json(
            {
                "type": "transcript.agent",
                "text": spoken,
                "reply_id": reply_id,
                "item_id": f"item_{secrets.token_hex(6)}",
                "interrupted": interrupted,
            }
        )
        await self.conn.send_json(
            {
                "type": "reply.done",
                "reply_id": reply_id,
                "status": "interrupted" if interrupted else "completed",
            }
        )
        if interrupted and self.session is not None:
            self.session.pending_call = None
        if self.reply_task is asyncio.current_task():
            self.reply_task = None

    @staticmethod
    async def _wait(event: asyncio.Event, seconds: float) -> bool:
        """Sleep up to ``seconds``; True if ``event`` fired (barge-in)."""
        if event.is_set():
            return True
        if seconds <= 0:
            return False
        try:
            await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            return False
        return True

    # -- lifetime -----------------------------------------------------------------
    conn_max_session_s: float = 10800.0

    def force_expiry(self) -> None:
        if self.session is not None:
            self.session.expires_at = time.monotonic()

    async def watchdog(self) -> None:
        while not self.done and not self.conn.closed:
            await asyncio.sleep(0.02)
            if self.session is not None and time.monotonic() >= self.session.expires_at:
                self.session.ended = True
                self.cancel_reply()
                await self.error("session_expired", "maximum session duration reached", fatal=True)
                return

    def detach(self) -> None:
        self.cancel_reply()
        if self.session is not None and self.session.conn is self.conn:
            self.session.conn = None
            if not self.session.ended:
                self.session.dropped_at = time.monotonic()


async def handle_agent(request: web.Request) -> web.StreamResponse:
    """``GET /v1/ws``: authorise (Bearer key or single-use token), then run."""
    from appliance.emulator.server import EMULATOR_KEY

    emu = request.app[EMULATOR_KEY]
    ws = websocket_response()
    await ws.prepare(request)
    record = SessionRecord(kind="agent", id="", rate=AGENT_RATE)
    conn = Connection(ws, request, record, emu.faults, emu.config)
    emu.state.sessions.append(record)
    agent = AgentConnection(emu, conn)
    try:
        auth = websocket_auth(request, "agent", emu.config.api_keys, emu.state.tokens)
        if not auth.ok:
            emu.refuse_auth("agent", auth)
            await agent.error("unauthorized", auth.reason, fatal=True)
            return ws
        record.auth = auth.method
        if emu.active_count("agent") >= emu.config.max_concurrent_sessions:
            emu.upgrade_refused("agent")
            await agent.error("concurrency_exceeded", "too many concurrent sessions", fatal=True)
            return ws
        emu.upgrade_accepted("agent")
        agent.conn_max_session_s = (
            auth.token.max_session_s if auth.token is not None else emu.config.default_session_s
        )
        emu.register(conn, agent)
        watchdog = asyncio.create_task(agent.watchdog())
        try:
            async for msg in conn.incoming():
                if msg.type == WSMsgType.TEXT:
                    await agent.on_text(msg.data)
                else:
                    conn.log_in("binary", len(msg.data))
                    await agent.error("invalid_format", "audio goes in input.audio JSON messages")
                if agent.done or conn.closed:
                    break
        finally:
            watchdog.cancel()
            agent.detach()
            emu.unregister(conn)
            emu.judge_close(
                conn, established=agent.ready_at is not None, said_goodbye=agent.client_ended
            )
    finally:
        conn.closed = True
        emu.finish_record(record)
    return ws
