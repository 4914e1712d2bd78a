"""What every mode's session offers the daemon, and how the wiring makes one.

The daemon drives sessions only through :class:`Session`; the wiring builds
one :data:`SessionFactory` per mode. Both import this module, neither the
other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from appliance.protocol.account import Account
from appliance.protocol.tuning import Tuning

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Account", "LiveControls", "NoticeCallback", "Session", "SessionFactory"]

#: How a session asks for an earcon-worthy notice ("error", "new_conversation", ...).
NoticeCallback = Callable[[str], None]


class Session(Protocol):
    """One live transcription, conversation or recording, from a press to its account."""

    async def run(self, start_index: int) -> Account | None:
        """Run from ring sample ``start_index`` until stopped; the account (None if refused)."""
        ...

    def request_stop(self, *, end_index: int | None = None) -> None:
        """End soon and cleanly (Terminate, session end, the recording made durable).

        ``end_index``: no audio from this ring index on is sent or kept (a mute
        began there); None: up to where the ring is when the session sees the stop.
        """
        ...

    def interrupt(self) -> None:
        """A press while it talks: cut the reply short (nothing to do for most sessions)."""
        ...


@runtime_checkable
class LiveControls(Protocol):
    """What a live transcription takes mid-session beyond :class:`Session` (page, button)."""

    def retune(
        self,
        *,
        keyterms_prompt: Sequence[str] | None = None,
        min_turn_silence: int | None = None,
        max_turn_silence: int | None = None,
    ) -> Tuning:
        """New key terms or turn silences, without reconnecting (ValueError if refused)."""
        ...

    def end_turn(self) -> None:
        """Close the open turn at once."""
        ...


#: A new session for one press; it reports notices through the callback.
SessionFactory = Callable[[NoticeCallback], Session]


class RecordingSink(Protocol):
    """A recording a session spools into (``appliance.spool.RecordingWriter`` is one)."""

    @property
    def id(self) -> str: ...
    @property
    def samples_written(self) -> int: ...
    def write(self, samples: np.ndarray) -> None: ...
    def note_lost(self, samples: int) -> None: ...
    def close(self) -> object: ...


class SpoolLike(Protocol):
    """The part of ``appliance.spool.Spool`` a session uses (``open_recording``)."""

    def open_recording(
        self,
        origin: str,
        rate: int,
        session_id: str | None = None,
        started_at: float | None = None,
        *,
        session_offset: int | None = None,
    ) -> RecordingSink: ...
