"""What every mode's session offers the daemon, and how the wiring makes one.

The daemon drives sessions only through :class:`Session`; the wiring builds
one :data:`SessionFactory` per mode. Both import this module, neither the
other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from appliance.protocol.account import Account

__all__ = ["Account", "NoticeCallback", "Session", "SessionFactory"]

#: How a session asks for an earcon-worthy notice ("error", "new_conversation", ...).
NoticeCallback = Callable[[str], None]


class Session(Protocol):
    """One live transcription, conversation or recording, from a press to its account."""

    async def run(self, start_index: int) -> Account | None:
        """Run from ring sample ``start_index`` until stopped; the account (None if refused)."""
        ...

    def request_stop(self) -> None:
        """End soon and cleanly (Terminate, session end, the recording made durable)."""
        ...

    def interrupt(self) -> None:
        """A press while it talks: cut the reply short (nothing to do for most sessions)."""
        ...


#: A new session for one press; it reports notices through the callback.
SessionFactory = Callable[[NoticeCallback], Session]
