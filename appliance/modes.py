"""The device's three modes and the names people read for them (log, status line, page)."""

from __future__ import annotations

from typing import Literal, get_args

Mode = Literal["live", "agent", "record"]
MODES: tuple[Mode, ...] = get_args(Mode)

#: Keyed by ``str`` so that any state source can be looked up (``MODE_LABELS.get(x, x)``).
MODE_LABELS: dict[str, str] = {
    "live": "live transcription",
    "agent": "voice agent",
    "record": "field recording",
}
