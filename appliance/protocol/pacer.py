"""Audio never ahead of real time: the one place that decides when a frame may go.

Both services count pacing against wall-clock time since the session began
(``Begin`` for streaming, ``session.ready`` for the agent): all audio
received, divided by the session's age, must not run ahead of real time. The
allowance is not documented, so the strict reading is taken: a client may
lead wall time by at most one maximum-size frame (``max_lead_seconds``, 1 s).

:class:`Pacer` holds the property by construction: :meth:`Pacer.take` refuses
any frame that would put the audio sent ahead of ``elapsed + max_lead``, so
whatever the backlog, the lead never exceeds one frame. A backlog that cannot
go in real time is the caller's to send elsewhere (the spool), never faster.

The clock is the caller's: the time the session's start was *received*, which
is after the server started counting, so the client's lead as the server sees
it is never larger than the pacer's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: The longest frame the streaming API accepts, and so the most audio may lead.
MAX_FRAME_SECONDS = 1.0


@dataclass(frozen=True)
class PacingLimits:
    """How far audio may lead wall time since the session began."""

    max_lead_seconds: float = MAX_FRAME_SECONDS

    def __post_init__(self) -> None:
        if not 0 < self.max_lead_seconds <= MAX_FRAME_SECONDS:
            raise ValueError(f"max_lead_seconds must be in (0, {MAX_FRAME_SECONDS}]")


class Pacer:
    """Counts audio sent on one connection against wall time since it began."""

    def __init__(self, rate: int, limits: PacingLimits | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.limits = limits or PacingLimits()
        self._lead_samples = math.floor(self.limits.max_lead_seconds * rate)
        self._began: float | None = None
        self._sent = 0

    @property
    def began(self) -> bool:
        return self._began is not None

    @property
    def sent_samples(self) -> int:
        """Samples sent since :meth:`begin`."""
        return self._sent

    @property
    def max_lead_samples(self) -> int:
        return self._lead_samples

    def begin(self, now: float) -> None:
        """The session began at ``now`` (its Begin / session.ready arrived): count from zero."""
        self._began = now
        self._sent = 0

    def end(self) -> None:
        """The connection is gone: nothing may be sent until the next :meth:`begin`."""
        self._began = None
        self._sent = 0

    def allowance(self, now: float) -> int:
        """How many samples may be sent at ``now`` without leading by more than one frame."""
        if self._began is None:
            return 0
        elapsed = max(0.0, now - self._began)
        return max(0, math.floor(elapsed * self.rate) + self._lead_samples - self._sent)

    def take(self, now: float, samples: int) -> bool:
        """Count a frame of ``samples`` as sent at ``now`` if pacing allows it; else refuse it."""
        if samples < 0:
            raise ValueError("samples must be >= 0")
        if samples > self.allowance(now):
            return False
        self._sent += samples
        return True

    def due(self, samples: int) -> float | None:
        """The earliest time a frame of ``samples`` may go (None: not begun)."""
        if self._began is None:
            return None
        need = self._sent + samples - self._lead_samples
        return self._began + max(0, need) / self.rate

    def lead_seconds(self, now: float) -> float:
        """Audio sent minus wall time since the session began (negative: behind)."""
        if self._began is None:
            return 0.0
        return self._sent / self.rate - max(0.0, now - self._began)
