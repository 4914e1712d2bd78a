"""What the emulator saw: per-session logs and audio, counters for assertions.

Written by the server's event loop, read by tests (possibly from another
thread); records only grow, so reading a snapshot needs no lock.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from appliance.emulator.tokens import TokenStore
from appliance.emulator.violations import Violation, count_by_rule


@dataclass
class LoggedMessage:
    direction: str  # "in" (client -> server) or "out"
    t: float  # monotonic seconds
    kind: str  # "json", "text", "binary"
    payload: Any  # parsed JSON, raw text, or the byte count of a binary frame


@dataclass
class SessionRecord:
    """One WebSocket connection (streaming or agent)."""

    kind: str  # "streaming" or "agent"
    id: str
    params: dict[str, Any] = field(default_factory=dict)
    rate: int = 16000
    opened_at: float = field(default_factory=time.monotonic)
    closed_at: float | None = None
    close_code: int | None = None
    close_reason: str | None = None
    messages: list[LoggedMessage] = field(default_factory=list)
    audio_chunks: list[np.ndarray] = field(default_factory=list)
    wav_path: Path | None = None
    auth: str = ""  # "api_key" or "token"

    def audio(self) -> np.ndarray:
        """Every sample received, as int16 at ``rate``."""
        if not self.audio_chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self.audio_chunks)

    def sent(self, type_: str | None = None) -> list[dict]:
        """Server -> client JSON messages, optionally of one ``type``."""
        return [
            m.payload
            for m in self.messages
            if m.direction == "out"
            and m.kind == "json"
            and (type_ is None or m.payload.get("type") == type_)
        ]

    def received(self, type_: str | None = None) -> list[dict]:
        """Client -> server JSON messages, optionally of one ``type``."""
        return [
            m.payload
            for m in self.messages
            if m.direction == "in"
            and m.kind == "json"
            and isinstance(m.payload, dict)
            and (type_ is None or m.payload.get("type") == type_)
        ]

    @property
    def closed(self) -> bool:
        return self.closed_at is not None


@dataclass
class UploadRecord:
    id: str
    path: Path
    size: int
    sha256: str
    url: str


@dataclass
class TranscriptRecord:
    id: str
    request: dict[str, Any]
    created_at: float
    upload_id: str | None
    result: dict[str, Any] | None = None  # filled when processing finishes
    deleted: bool = False


class EmulatorState:
    """Counters and records tests assert on (``emu.state``)."""

    def __init__(self) -> None:
        self.tokens = TokenStore()
        self.counters: Counter[str] = Counter()
        self.sessions: list[SessionRecord] = []
        self.uploads: dict[str, UploadRecord] = {}
        self.transcripts: dict[str, TranscriptRecord] = {}
        self.submissions_by_upload: Counter[str] = Counter()
        self.submissions_by_hash: Counter[str] = Counter()
        self.http_requests: list[tuple[str, str, int]] = []  # method, path, status
        #: Every LLM Gateway chat completion answered (its request body), in order.
        self.chat_completions: list[dict[str, Any]] = []
        #: Every client rule broken (``violations.RULES``), in order.
        self.violations: list[Violation] = []

    def record_violation(
        self, rule: str, kind: str, detail: str, session: str | None = None, **data: Any
    ) -> Violation:
        violation = Violation(rule, kind, detail, time.monotonic(), session, data)
        self.violations.append(violation)
        return violation

    def violation_counts(self) -> dict[str, int]:
        """Violations per rule, every rule present (all 0 for a well-behaved client)."""
        return count_by_rule(self.violations)

    def violations_of(self, rule: str, kind: str | None = None) -> list[Violation]:
        return [v for v in self.violations if v.rule == rule and kind in (None, v.kind)]

    # Convenience views -------------------------------------------------
    @property
    def tokens_issued(self) -> int:
        return self.tokens.issued

    @property
    def token_reuse_attempts(self) -> int:
        return self.tokens.reuse_attempts

    @property
    def chunk_size_violations(self) -> int:
        return self.counters["chunk_size_violations"]

    @property
    def rate_violations(self) -> int:
        return self.counters["rate_violations"]

    def streaming_sessions(self) -> list[SessionRecord]:
        return [s for s in self.sessions if s.kind == "streaming"]

    def agent_sessions(self) -> list[SessionRecord]:
        return [s for s in self.sessions if s.kind == "agent"]

    def sessions_per_token(self) -> dict[str, int]:
        return self.tokens.attempts_per_token()

    def submissions_for_upload(self, upload_url_or_id: str) -> int:
        upload_id = upload_url_or_id.rstrip("/").rsplit("/", 1)[-1]
        return self.submissions_by_upload[upload_id]

    def summary(self) -> dict[str, Any]:
        """A JSON-able digest (served at ``GET /_emulator/state``)."""
        return {
            "tokens_issued": self.tokens_issued,
            "token_reuse_attempts": self.token_reuse_attempts,
            "counters": dict(self.counters),
            "violations": [v.as_dict() for v in self.violations],
            "violation_counts": self.violation_counts(),
            "sessions_per_token": self.sessions_per_token(),
            "submissions_by_upload": dict(self.submissions_by_upload),
            "submissions_by_hash": dict(self.submissions_by_hash),
            "sessions": [
                {
                    "kind": s.kind,
                    "id": s.id,
                    "params": s.params,
                    "close_code": s.close_code,
                    "close_reason": s.close_reason,
                    "audio_seconds": sum(c.size for c in s.audio_chunks) / s.rate,
                    "messages_in": sum(1 for m in s.messages if m.direction == "in"),
                    "messages_out": sum(1 for m in s.messages if m.direction == "out"),
                    "wav_path": str(s.wav_path) if s.wav_path else None,
                }
                for s in self.sessions
            ],
            "uploads": {u.id: {"size": u.size, "sha256": u.sha256} for u in self.uploads.values()},
            "transcripts": {
                t.id: (t.result or {}).get("status", "queued") for t in self.transcripts.values()
            },
        }

    def summary_json(self) -> str:
        return json.dumps(self.summary())
