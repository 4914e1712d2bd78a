"""The state LED: what the device is doing, readable from across the room.

One table maps each device state to a pattern for each kind of LED (a plain
LED can only blink, a PWM LED can also dim and pulse, an RGB LED adds colour,
and a mic HAT's APA102 ring shows the RGB patterns on every LED);
:func:`pattern_for` is pure and every state gets a pattern distinct from every
other on the same LED. :class:`StateLed` applies patterns with gpiozero's
own background blink/pulse threads, so nothing here runs per frame.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import typing
from typing import Any, Literal

from appliance.config import LedConfig
from appliance.events import EventBus, State, StateChanged

log = logging.getLogger(__name__)

STATES: tuple[State, ...] = typing.get_args(State)
Color = tuple[float, float, float]

OFF: Color = (0.0, 0.0, 0.0)
WHITE: Color = (1.0, 1.0, 1.0)
DIM_BLUE: Color = (0.0, 0.0, 0.15)
YELLOW: Color = (1.0, 0.7, 0.0)
GREEN: Color = (0.0, 1.0, 0.0)
CYAN: Color = (0.0, 0.8, 1.0)
RED: Color = (1.0, 0.0, 0.0)
AMBER: Color = (1.0, 0.35, 0.0)
MAGENTA: Color = (0.8, 0.0, 0.8)


@dataclasses.dataclass(frozen=True)
class LedPattern:
    """How the LED looks: ``steady`` at ``color``, ``blink``, or ``pulse`` (fading)."""

    kind: Literal["off", "steady", "blink", "pulse"]
    color: Color = WHITE  # plain/PWM LEDs use the brightest component as brightness
    on_time: float = 0.0  # blink
    off_time: float = 0.0  # blink
    fade_time: float = 0.0  # pulse: fade in and out; blink: soft edges (PWM/RGB only)

    @property
    def brightness(self) -> float:
        return max(self.color)


# A plain LED can only be on or off, so states differ by rhythm.
_PLAIN: dict[str, LedPattern] = {
    "idle": LedPattern("blink", on_time=0.05, off_time=2.95),  # a heartbeat: alive, waiting
    "connecting": LedPattern("blink", on_time=0.25, off_time=0.25),
    "listening": LedPattern("steady"),
    "agent_speaking": LedPattern("blink", on_time=0.5, off_time=0.5),
    "recording": LedPattern("blink", on_time=0.9, off_time=0.1),  # on, with a short wink
    "offline": LedPattern("blink", on_time=0.1, off_time=1.9),
    "error": LedPattern("blink", on_time=0.08, off_time=0.08),
    "muted": LedPattern("blink", on_time=0.05, off_time=0.45),  # a quick flicker
}

_PWM: dict[str, LedPattern] = {
    "idle": LedPattern("steady", color=(0.05, 0.05, 0.05)),  # dim: alive, waiting
    "connecting": LedPattern("pulse", fade_time=0.3),
    "listening": LedPattern("steady"),
    "agent_speaking": LedPattern("pulse", fade_time=0.8),
    "recording": LedPattern("blink", on_time=0.9, off_time=0.1),
    "offline": LedPattern("blink", on_time=0.1, off_time=1.9),
    "error": LedPattern("blink", on_time=0.08, off_time=0.08),
    "muted": LedPattern("steady", color=(0.3, 0.3, 0.3)),  # half bright: on, but not hearing
}

_RGB: dict[str, LedPattern] = {
    "idle": LedPattern("steady", color=DIM_BLUE),
    "connecting": LedPattern("pulse", color=YELLOW, fade_time=0.3),
    "listening": LedPattern("steady", color=GREEN),
    "agent_speaking": LedPattern("pulse", color=CYAN, fade_time=0.8),
    "recording": LedPattern("steady", color=RED),
    "offline": LedPattern("blink", color=AMBER, on_time=0.1, off_time=1.9),
    "error": LedPattern("blink", color=RED, on_time=0.08, off_time=0.08),
    "muted": LedPattern("steady", color=MAGENTA),
}

_TABLES = {"led": _PLAIN, "pwm": _PWM, "rgb": _RGB, "apa102": _RGB}


def pattern_for(led_kind: str, state: str) -> LedPattern:
    """The pattern an LED of ``led_kind`` (led|pwm|rgb|apa102) shows for a device ``state``."""
    table = _TABLES.get(led_kind)
    if table is None:
        return LedPattern("off")
    return table.get(state, table["error"])


class StateLed:
    """Drives the configured LED from device states (nothing at all for ``kind: none``)."""

    def __init__(self, config: LedConfig) -> None:
        self.config = config
        self.device: Any = None
        self.state: str | None = None
        self.pattern: LedPattern | None = None

    def open(self) -> None:
        """Create the gpiozero device (only here, so a PC without GPIO never touches it)."""
        kind, pins = self.config.kind, self.config.pins
        if kind == "none" or self.device is not None:
            return
        if kind == "apa102":
            self._open_ring()
            return
        import gpiozero  # imported only when an LED is configured

        high = self.config.active_high
        if kind == "led":
            self.device = gpiozero.LED(pins[0], active_high=high)
        elif kind == "pwm":
            self.device = gpiozero.PWMLED(pins[0], active_high=high)
        elif kind == "rgb":
            self.device = gpiozero.RGBLED(pins[0], pins[1], pins[2], active_high=high)
        log.info("state LED: %s on GPIO %s", kind, ",".join(map(str, pins)))

    def _open_ring(self) -> None:
        """The HAT's ring; without spidev or SPI the device runs unlit (check says why)."""
        from appliance.controls.apa102 import APA102Ring, LedRingUnavailable

        c = self.config
        try:
            self.device = APA102Ring(
                c.count,
                bus=c.spi_bus,
                device=c.spi_device,
                speed_hz=c.spi_speed_hz,
                brightness=c.brightness,
                frame_rate=c.frame_rate,
            )
        except LedRingUnavailable as exc:
            log.error("state LED ring off: %s", exc)
            return
        log.info("state LED: APA102 ring of %d on SPI %d.%d", c.count, c.spi_bus, c.spi_device)

    def close(self) -> None:
        if self.device is not None:
            self.device.close()
            self.device = None

    def show(self, state: str) -> None:
        """Show ``state``; re-showing the current state does not restart its rhythm."""
        if self.device is None or state == self.state:
            return
        self.state = state
        pattern = pattern_for(self.config.kind, state)
        self.pattern = pattern
        try:
            self._apply(pattern)
        except Exception:  # an LED fault must never take the daemon down
            log.exception("LED update failed")

    def _apply(self, p: LedPattern) -> None:
        led, kind = self.device, self.config.kind
        if kind in ("rgb", "apa102"):
            if p.kind == "steady":
                led.color = p.color
            elif p.kind == "blink":
                led.blink(p.on_time, p.off_time, on_color=p.color, off_color=OFF)
            elif p.kind == "pulse":
                led.pulse(p.fade_time, p.fade_time, on_color=p.color, off_color=OFF)
            else:
                led.off()
            return
        if p.kind == "steady":
            if kind == "pwm":
                led.value = p.brightness
            else:
                led.on()
        elif p.kind == "blink":
            led.blink(p.on_time, p.off_time)
        elif p.kind == "pulse" and kind == "pwm":
            led.pulse(p.fade_time, p.fade_time)
        else:
            led.off()

    async def follow(self, bus: EventBus) -> None:
        """Show every state event's ``state`` until cancelled (starting from the latest)."""
        last = bus.latest(StateChanged)
        if last is not None:
            self.show(last.event.state)
        subscription = bus.subscribe((StateChanged,))
        try:
            async for published in subscription:
                if isinstance(published.event, StateChanged):
                    self.show(published.event.state)
                await asyncio.sleep(0)
        finally:
            subscription.close()
