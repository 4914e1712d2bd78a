"""What a live session can retune without reconnecting: key terms and turn silence.

The agent instructions document one mid-session message for Universal
Streaming v3, ``{"type": "UpdateConfiguration", "keyterms_prompt": [...],
"min_turn_silence": 100, "max_turn_silence": 1000}``, and these three fields
are all it names. A :class:`Tuning` holds their current values; the streaming
core (:mod:`appliance.protocol.streaming`) sends the difference on the open
connection and asks for the whole of it on every new one, so a reconnect
never falls back to the configuration the session started with.

The limits are the documented ones for key terms (streaming: up to 100 terms,
each at most 50 characters). The documentation gives no range for the turn
silences; the bounds here are the project's one choice, shared by the config
schema, so a retune can never ask for what a fresh connection would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Streaming key terms: "up to 100 terms, each ≤50 chars" (agent instructions, section 3).
MAX_KEYTERMS = 100
MAX_KEYTERM_CHARS = 50
#: Turn silences in ms (undocumented range: the project's bound for both, config included).
MAX_TURN_SILENCE_MS = 10_000

UPDATE_CONFIGURATION = "UpdateConfiguration"
FORCE_ENDPOINT = "ForceEndpoint"


@dataclass(frozen=True)
class Tuning:
    """The retunable part of a live session's configuration (None: the server's default)."""

    keyterms_prompt: tuple[str, ...] = ()
    min_turn_silence: int | None = None
    max_turn_silence: int | None = None

    def problems(self) -> list[str]:
        """Why the service would refuse this tuning, one line each (empty: fine)."""
        out: list[str] = []
        if len(self.keyterms_prompt) > MAX_KEYTERMS:
            out.append(f"at most {MAX_KEYTERMS} key terms are allowed")
        for term in self.keyterms_prompt:
            if not term.strip():
                out.append("a key term may not be empty")
            elif len(term) > MAX_KEYTERM_CHARS:
                out.append(f"a key term may have at most {MAX_KEYTERM_CHARS} characters")
        for name in ("min_turn_silence", "max_turn_silence"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= MAX_TURN_SILENCE_MS:
                out.append(f"{name} must be in 0..{MAX_TURN_SILENCE_MS} ms")
        lo, hi = self.min_turn_silence, self.max_turn_silence
        if lo is not None and hi is not None and lo > hi:
            out.append("min_turn_silence may not exceed max_turn_silence")
        return out

    def merged(
        self,
        *,
        keyterms_prompt: tuple[str, ...] | None = None,
        min_turn_silence: int | None = None,
        max_turn_silence: int | None = None,
    ) -> Tuning:
        """This tuning with the given fields replaced (None: keep the current value).

        A silence cannot go back to "the server's default" mid-session: the
        message has no way to say so.
        """

        def pick(new: Any, old: Any) -> Any:
            return old if new is None else new

        return Tuning(
            keyterms_prompt=pick(keyterms_prompt, self.keyterms_prompt),
            min_turn_silence=pick(min_turn_silence, self.min_turn_silence),
            max_turn_silence=pick(max_turn_silence, self.max_turn_silence),
        )

    def update_from(self, before: Tuning) -> dict[str, Any] | None:
        """The ``UpdateConfiguration`` message that turns ``before`` into this (None: same)."""
        message: dict[str, Any] = {}
        if self.keyterms_prompt != before.keyterms_prompt:
            message["keyterms_prompt"] = list(self.keyterms_prompt)
        for name in ("min_turn_silence", "max_turn_silence"):
            value = getattr(self, name)
            if value is not None and value != getattr(before, name):
                message[name] = value
        if not message:
            return None
        return {"type": UPDATE_CONFIGURATION, **message}
