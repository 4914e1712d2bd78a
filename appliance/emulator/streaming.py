"""Universal Streaming v3 (``/v3/ws``): parameter rules, pacing rules and turns."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from aiohttp import WSMsgType, web

from appliance.emulator import recognizer
from appliance.emulator.auth import websocket_auth
from appliance.emulator.connection import Connection, websocket_response
from appliance.emulator.g711 import mulaw_decode
from appliance.emulator.rules import pacing_exceeded
from appliance.emulator.state import SessionRecord
from appliance.emulator.violations import PACING

if TYPE_CHECKING:
    from appliance.emulator.server import EmulatorApp

SPEECH_MODELS = frozenset(
    {"universal-streaming-english", "universal-streaming-multilingual", "u3-rt-pro"}
)
ENCODINGS = frozenset({"pcm_s16le", "pcm_mulaw"})
DOMAINS = frozenset({"medical-v1"})
BOOLEANS = {"true": True, "false": False, "True": True, "False": False}
MIN_CHUNK_MS = 50
MAX_CHUNK_MS = 1000
#: Streaming key terms: "up to 100 terms, each ≤50 chars" (agent instructions, section 3).
MAX_KEYTERMS = 100
MAX_KEYTERM_CHARS = 50
#: Turn silences (ms): no range is documented; one bound for the URL and UpdateConfiguration.
MAX_TURN_SILENCE_MS = 10000
#: Speaker labels of successive turns on one connection (diarization: "Speaker A, B, C").
SPEAKER_LABELS = ("A", "B")

CLOSE_UNAUTHORIZED = 1008
CLOSE_INVALID = 3006
CLOSE_AUDIO = 3007
CLOSE_EXPIRED = 3008
CLOSE_TOO_MANY = 3009


@dataclass
class StreamingParams:
    sample_rate: int
    encoding: str = "pcm_s16le"
    speech_model: str | None = None
    format_turns: bool = False
    min_turn_silence: int | None = None
    max_turn_silence: int | None = None
    end_of_turn_confidence_threshold: float | None = None
    inactivity_timeout: int | None = None
    keyterms_prompt: list[str] = field(default_factory=list)
    prompt: str | None = None
    domain: str | None = None
    language_detection: bool = False
    speaker_labels: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class ParamError(ValueError):
    pass


def _int(name: str, raw: str, lo: int, hi: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ParamError(f"Invalid query parameter {name}: expected an integer") from None
    if not lo <= value <= hi:
        raise ParamError(f"Invalid query parameter {name}: must be between {lo} and {hi}")
    return value


def _float(name: str, raw: str, lo: float, hi: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ParamError(f"Invalid query parameter {name}: expected a number") from None
    if not lo <= value <= hi:
        raise ParamError(f"Invalid query parameter {name}: must be between {lo} and {hi}")
    return value


def _bool(name: str, raw: str) -> bool:
    if raw not in BOOLEANS:
        raise ParamError(f"Invalid query parameter {name}: expected true or false")
    return BOOLEANS[raw]


def _keyterms(raw: Any) -> list[str]:
    terms = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
        raise ParamError("Invalid keyterms_prompt: expected a JSON array of strings")
    if len(terms) > MAX_KEYTERMS:
        raise ParamError(f"Invalid keyterms_prompt: at most {MAX_KEYTERMS} terms")
    if any(len(t) > MAX_KEYTERM_CHARS for t in terms):
        raise ParamError(f"Invalid keyterms_prompt: a term has at most {MAX_KEYTERM_CHARS} chars")
    return terms


def _silences(lo: int | None, hi: int | None) -> None:
    if lo is not None and hi is not None and lo > hi:
        raise ParamError("Invalid query parameter: min_turn_silence exceeds max_turn_silence")


def parse_params(pairs: list[tuple[str, str]]) -> StreamingParams:
    """Validate the upgrade's query parameters (``token`` excluded) like the service."""
    seen: dict[str, str] = {}
    for name, value in pairs:
        if name in seen:
            raise ParamError(f"Invalid query parameter {name}: given more than once")
        seen[name] = value
    known = {
        "sample_rate", "encoding", "speech_model", "format_turns", "min_turn_silence",
        "max_turn_silence", "end_of_turn_confidence_threshold", "inactivity_timeout",
        "keyterms_prompt", "prompt", "domain", "language_detection", "speaker_labels",
        "vad_threshold", "language_code",
    }  # fmt: skip
    unknown = sorted(set(seen) - known)
    if unknown:
        raise ParamError(f"Invalid query parameter: unknown parameter {unknown[0]}")
    encoding = seen.get("encoding", "pcm_s16le")
    if encoding not in ENCODINGS:
        raise ParamError("Invalid query parameter encoding: expected pcm_s16le or pcm_mulaw")
    if "sample_rate" not in seen:
        raise ParamError("Invalid query parameter: sample_rate is required")
    p = StreamingParams(sample_rate=_int("sample_rate", seen["sample_rate"], 8000, 48000))
    p.encoding = encoding
    if "speech_model" in seen:
        if seen["speech_model"] not in SPEECH_MODELS:
            raise ParamError(f"Invalid query parameter speech_model: {seen['speech_model']}")
        p.speech_model = seen["speech_model"]
    for name in ("format_turns", "language_detection", "speaker_labels"):
        if name in seen:
            setattr(p, name, _bool(name, seen[name]))
    for name in ("min_turn_silence", "max_turn_silence"):
        if name in seen:
            setattr(p, name, _int(name, seen[name], 0, MAX_TURN_SILENCE_MS))
    _silences(p.min_turn_silence, p.max_turn_silence)
    if "end_of_turn_confidence_threshold" in seen:
        p.end_of_turn_confidence_threshold = _float(
            "end_of_turn_confidence_threshold", seen["end_of_turn_confidence_threshold"], 0, 1
        )
    if "vad_threshold" in seen:
        p.extra["vad_threshold"] = _float("vad_threshold", seen["vad_threshold"], 0, 1)
    if "inactivity_timeout" in seen:
        p.inactivity_timeout = _int("inactivity_timeout", seen["inactivity_timeout"], 5, 3600)
    if "keyterms_prompt" in seen:
        try:
            p.keyterms_prompt = _keyterms(seen["keyterms_prompt"])
        except json.JSONDecodeError:
            raise ParamError("Invalid keyterms_prompt: expected a JSON array of strings") from None
    if "prompt" in seen:
        p.prompt = seen["prompt"]
    if "domain" in seen:
        if seen["domain"] not in DOMAINS:
            raise ParamError(f"Invalid query parameter domain: {seen['domain']}")
        p.domain = seen["domain"]
    if "language_code" in seen:
        p.extra["language_code"] = seen["language_code"]
    return p


def chunk_duration_violation(n_bytes: int, params: StreamingParams) -> str | None:
    """The 3007 message for a frame outside 50..1000 ms, else None."""
    width = 2 if params.encoding == "pcm_s16le" else 1
    samples = n_bytes // width
    if samples * 1000 < MIN_CHUNK_MS * params.sample_rate or (
        samples * 1000 > MAX_CHUNK_MS * params.sample_rate
    ):
        ms = int(samples * 1000 / params.sample_rate)
        return f"Input duration violation: {ms} ms. Expected between 50 and 1000 ms"
    return None


def rate_violation(
    received_s: float, elapsed_s: float, rate_allowance: float, max_lead_s: float
) -> str | None:
    """The 3007 message when audio runs ahead of wall time since Begin, else None."""
    if pacing_exceeded(received_s, elapsed_s, rate_allowance, max_lead_s):
        return (
            f"Audio Transmission Rate Exceeded: Received {received_s:.1f} sec. audio "
            f"in {elapsed_s:.1f} sec"
        )
    return None


#: What ``UpdateConfiguration`` may carry: the fields the documentation names for it
#: ("keyterms_prompt", "min_turn_silence", "max_turn_silence"), nothing else.
UPDATE_FIELDS = {"keyterms_prompt", "min_turn_silence", "max_turn_silence"}


class StreamingSession:
    """One live ``/v3/ws`` session: turns from DTMF audio, limits enforced."""

    def __init__(
        self, app: EmulatorApp, conn: Connection, params: StreamingParams, max_session_s: float
    ) -> None:
        self.app = app
        self.conn = conn
        self.params = params
        self.config = app.config
        self.id = conn.record.id
        self.started = time.monotonic()
        #: Pacing counts from the moment Begin went out (set by ``begin``).
        self.began_at = self.started
        self.begun = False
        self.expires_at_mono = self.started + self.config.scaled(max_session_s)
        self.expires_at_wall = int(time.time() + self.config.scaled(max_session_s))
        self.received_samples = 0
        self.turn_order = 0
        self.detector = recognizer.TurnDetector(params.sample_rate, self._end_silence_ms())
        self.done = False
        #: The client said goodbye (Terminate); a session without one was abandoned.
        self.client_terminated = False

    def _end_silence_ms(self) -> int:
        lo = self.params.min_turn_silence
        hi = self.params.max_turn_silence
        lo = self.config.default_min_turn_silence_ms if lo is None else lo
        hi = self.config.default_max_turn_silence_ms if hi is None else hi
        return min(lo, hi)

    async def begin(self) -> None:
        # The session begins when the server writes Begin, not when its send returns: a
        # client counts from receiving it, which is never earlier.
        await self.conn.send_json(
            {"type": "Begin", "id": self.id, "expires_at": self.expires_at_wall},
            on_write=self._mark_begun,
        )
        self.begun = not self.conn.closed

    def _mark_begun(self) -> None:
        self.began_at = time.monotonic()

    async def fail(self, code: int, reason: str) -> None:
        """Send the Error frame, then close with the same code."""
        self.done = True
        await self.conn.send_json({"type": "Error", "error_code": code, "error": reason})
        await self.conn.close(code, reason)

    async def on_binary(self, data: bytes) -> None:
        self.conn.log_in("binary", len(data))
        p = self.params
        if p.encoding == "pcm_s16le" and len(data) % 2:
            await self.fail(CLOSE_INVALID, "Invalid audio: PCM16 frames must hold whole samples")
            return
        violation = chunk_duration_violation(len(data), p)
        if violation:
            self.app.state.counters["chunk_size_violations"] += 1
            await self.fail(CLOSE_AUDIO, violation)
            return
        samples = (
            np.frombuffer(data, dtype="<i2").astype(np.int16)
            if p.encoding == "pcm_s16le"
            else mulaw_decode(data)
        )
        self.received_samples += samples.size
        elapsed = time.monotonic() - self.began_at
        violation = rate_violation(
            self.received_samples / p.sample_rate,
            elapsed,
            self.config.rate_allowance,
            self.config.max_lead_s,
        )
        if violation:
            self.app.state.counters["rate_violations"] += 1
            self.app.state.record_violation(
                PACING,
                "streaming",
                violation,
                session=self.id,
                received_s=self.received_samples / p.sample_rate,
                elapsed_s=elapsed,
            )
            await self.fail(CLOSE_AUDIO, violation)
            return
        self.conn.record.audio_chunks.append(samples)
        await self._emit(self.detector.feed(samples))

    async def on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            self.conn.log_in("text", text)
            await self.fail(CLOSE_INVALID, "Invalid JSON")
            return
        self.conn.log_in("json", message)
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "Terminate":
            self.client_terminated = True
            await self.terminate()
        elif kind == "ForceEndpoint":
            await self._emit(self.detector.force_endpoint())
        elif kind == "KeepAlive":
            pass
        elif kind == "UpdateConfiguration":
            await self._update(message)
        else:
            await self.fail(CLOSE_INVALID, f"Invalid message type: {str(kind)[:40]}")

    async def _update(self, message: dict[str, Any]) -> None:
        fields = {k: v for k, v in message.items() if k != "type"}
        unknown = sorted(set(fields) - UPDATE_FIELDS)
        if unknown:
            await self.fail(CLOSE_INVALID, f"Invalid UpdateConfiguration field: {unknown[0]}")
            return
        try:
            # Everything is checked before anything changes: a refused update changes nothing.
            keyterms = self.params.keyterms_prompt
            if "keyterms_prompt" in fields:
                if not isinstance(fields["keyterms_prompt"], list):
                    raise ParamError("Invalid keyterms_prompt: expected an array of strings")
                keyterms = _keyterms(fields["keyterms_prompt"])
            silences = {}
            for name in ("min_turn_silence", "max_turn_silence"):
                if name in fields:
                    value = fields[name]
                    if not isinstance(value, int) or isinstance(value, bool):
                        raise ParamError(f"Invalid {name}: expected an integer")
                    if not 0 <= value <= MAX_TURN_SILENCE_MS:
                        raise ParamError(
                            f"Invalid {name}: must be between 0 and {MAX_TURN_SILENCE_MS}"
                        )
                    silences[name] = value
            _silences(
                silences.get("min_turn_silence", self.params.min_turn_silence),
                silences.get("max_turn_silence", self.params.max_turn_silence),
            )
        except ParamError as exc:
            await self.fail(CLOSE_INVALID, str(exc))
            return
        self.params.keyterms_prompt = keyterms
        for name, value in silences.items():
            setattr(self.params, name, value)
        self.detector.end_silence_ms = self._end_silence_ms()

    async def terminate(self) -> None:
        """Client asked to end: flush the open turn, report, close 1000."""
        if self.done:
            return
        self.done = True
        await self._emit(self.detector.finish())
        await self.conn.send_json(
            {
                "type": "Termination",
                "audio_duration_seconds": int(self.received_samples / self.params.sample_rate),
                "session_duration_seconds": int(time.monotonic() - self.started),
            }
        )
        await self.conn.close(1000, "")

    async def _emit(self, events: list) -> None:
        for event in events:
            if isinstance(event, recognizer.SpeechStarted):
                await self.conn.send_json(
                    {"type": "SpeechStarted", "timestamp": event.timestamp_ms, "confidence": 0.9}
                )
            else:
                await self._send_turn(event)

    def _turn_message(self, words: tuple[recognizer.Word, ...], end: bool, formatted: bool) -> dict:
        texts = (
            recognizer.formatted_texts(list(words), self.params.keyterms_prompt)
            if formatted
            else [w.text for w in words]
        )
        transcript = " ".join(texts)
        message: dict[str, Any] = {
            "type": "Turn",
            "turn_order": self.turn_order,
            "turn_is_formatted": formatted,
            "end_of_turn": end,
            "transcript": transcript,
            "end_of_turn_confidence": 0.95 if end else 0.05,
            "utterance": transcript if end else "",
            "words": [
                {
                    "text": text,
                    "start": w.start_ms,
                    "end": w.end_ms,
                    "confidence": w.confidence,
                    "word_is_final": True,
                }
                for w, text in zip(words, texts, strict=True)
            ],
        }
        if self.params.language_detection:
            message["language_code"] = "en"
            message["language_confidence"] = 0.99
        if self.params.speaker_labels:
            # Each DTMF digit group is one turn; successive turns alternate speakers.
            message["speaker_label"] = SPEAKER_LABELS[self.turn_order % len(SPEAKER_LABELS)]
        return message

    async def _send_turn(self, update: recognizer.TurnUpdate) -> None:
        if not update.final:
            await self.conn.send_json(self._turn_message(update.words, False, False))
            return
        await self.conn.send_json(self._turn_message(update.words, True, False))
        if self.params.format_turns:
            await self.conn.send_json(self._turn_message(update.words, True, True))
        self.turn_order += 1

    async def watchdog(self) -> None:
        """Session cap and inactivity timeout, on the (scaled) server clock."""
        while not self.done and not self.conn.closed:
            await asyncio.sleep(0.02)
            now = time.monotonic()
            if now >= self.expires_at_mono:
                await self.fail(CLOSE_EXPIRED, "Session expired: maximum session duration reached")
                return
            timeout = self.params.inactivity_timeout
            if timeout is not None and now - self.conn.last_activity >= self.config.scaled(timeout):
                await self.terminate()
                return

    def force_expiry(self) -> None:
        self.expires_at_mono = time.monotonic()


async def handle_streaming(request: web.Request) -> web.StreamResponse:
    """``GET /v3/ws``: authorise, validate, then run the session."""
    from appliance.emulator.server import EMULATOR_KEY

    emu = request.app[EMULATOR_KEY]
    ws = websocket_response()
    await ws.prepare(request)
    record = SessionRecord(kind="streaming", id=str(uuid.uuid4()))
    record.params = {k: v for k, v in request.query.items() if k != "token"}
    conn = Connection(ws, request, record, emu.faults, emu.config)
    emu.state.sessions.append(record)
    try:
        await _run_streaming(emu, request, conn)
    finally:
        conn.closed = True
        emu.finish_record(record)
    return ws


async def _reject(conn: Connection, code: int, reason: str) -> None:
    await conn.send_json({"type": "Error", "error_code": code, "error": reason})
    await conn.close(code, reason)


async def _run_streaming(emu: EmulatorApp, request: web.Request, conn: Connection) -> None:
    auth = websocket_auth(request, "streaming", emu.config.api_keys, emu.state.tokens)
    if not auth.ok:
        emu.refuse_auth("streaming", auth)
        await _reject(conn, CLOSE_UNAUTHORIZED, auth.reason)
        return
    conn.record.auth = auth.method
    try:
        params = parse_params([(k, v) for k, v in request.query.items() if k != "token"])
    except ParamError as exc:
        emu.state.counters["param_violations"] += 1
        emu.upgrade_refused("streaming")
        await _reject(conn, CLOSE_INVALID, str(exc))
        return
    if emu.active_count("streaming") >= emu.config.max_concurrent_sessions:
        emu.state.counters["concurrency_violations"] += 1
        emu.upgrade_refused("streaming")
        await _reject(conn, CLOSE_TOO_MANY, "Too many concurrent sessions")
        return
    conn.record.rate = params.sample_rate
    max_session_s = (
        auth.token.max_session_s if auth.token is not None else emu.config.default_session_s
    )
    session = StreamingSession(emu, conn, params, max_session_s)
    emu.register(conn, session)
    emu.upgrade_accepted("streaming")
    watchdog = asyncio.create_task(session.watchdog())
    try:
        await session.begin()
        emu.apply_next_session_fault(conn)
        async for msg in conn.incoming():
            if conn.closed or session.done:
                break
            if msg.type == WSMsgType.BINARY:
                await session.on_binary(msg.data)
            else:
                await session.on_text(msg.data)
    finally:
        session.done = True
        watchdog.cancel()
        emu.unregister(conn)
        emu.judge_close(conn, established=session.begun, said_goodbye=session.client_terminated)
