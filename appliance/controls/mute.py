"""A GPIO mute switch: closed means muted, whatever the page or a gesture said before.

A switch (not a button) has a position, so the daemon follows its level: at
start and on every change. gpiozero calls back from its own threads; each
change is handed to the asyncio loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from appliance.config import MuteConfig

log = logging.getLogger(__name__)


class MuteSwitch:
    """Reports the switch's position (``on_change(muted)``) on the loop :meth:`start` ran on."""

    def __init__(self, config: MuteConfig) -> None:
        self.config = config
        self._on_change: Callable[[bool], object] = lambda muted: None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.device: Any = None  # gpiozero.Button

    @property
    def muted(self) -> bool:
        """Where the switch is now (False when it is not open)."""
        return bool(self.device is not None and self.device.is_pressed)

    def start(self, on_change: Callable[[bool], object]) -> None:
        """Open the pin; the current position is reported at once, then every change."""
        from gpiozero import Button  # imported only when a switch is configured

        self._on_change = on_change
        self._loop = asyncio.get_running_loop()
        bounce = self.config.bounce_ms / 1000 or None
        self.device = Button(self.config.pin, pull_up=self.config.pull_up, bounce_time=bounce)
        self.device.when_pressed = self._changed
        self.device.when_released = self._changed
        log.info("mute switch on GPIO%d", self.config.pin)
        self._on_change(self.muted)

    def close(self) -> None:
        device, self.device = self.device, None
        if device is not None:
            device.when_pressed = None
            device.when_released = None
            device.close()

    def _changed(self) -> None:
        loop, device = self._loop, self.device
        if loop is None or device is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: shutting down
            loop.call_soon_threadsafe(self._report)

    def _report(self) -> None:
        if self.device is not None:
            self._on_change(self.muted)
