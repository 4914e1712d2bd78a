"""An APA102 LED ring on SPI (ReSpeaker 2-mic and 4-mic HATs), driven like a gpiozero RGBLED.

The state LED (:mod:`appliance.controls.leds`) drives an RGB LED through
``color``, ``blink()``, ``pulse()`` and ``off()``; :class:`APA102Ring`
offers the same, so the ring shows the RGB LED's patterns with every LED
alike.  Blinks and pulses run in one background thread, as gpiozero's do;
a blink writes the ring only at its edges, a fade ``frame_rate`` times a
second.

The frame format (APA102 datasheet): a start frame of 32 zero bits; per LED
``0b111`` and a 5-bit global brightness, then blue, green, red; an end frame
of ones, at least half a bit per LED (each LED delays the clock by half a
cycle) and never less than the datasheet's 32.  :func:`encode_frame` is pure.

``spidev`` (a small C extension: the ``hats`` extra, or Debian's
``python3-spidev``) is imported only when a ring is opened, so a machine
without it imports this module and learns why at ``appliance check``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

Color = tuple[float, float, float]
OFF: Color = (0.0, 0.0, 0.0)
WHITE: Color = (1.0, 1.0, 1.0)

START_FRAME = bytes(4)
LED_MARKER = 0b1110_0000
MAX_BRIGHTNESS = 31  # the 5-bit global brightness field
MIN_END_FRAME_BYTES = 4


class SpiDevice(Protocol):
    """The part of ``spidev.SpiDev`` the ring uses (a test double records the writes)."""

    max_speed_hz: int
    mode: int

    def open(self, bus: int, device: int) -> None: ...

    def writebytes2(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class LedRingUnavailable(RuntimeError):
    """The ring cannot be driven here: spidev is missing, or the SPI device is."""


def brightness_bits(brightness: float) -> int:
    """The 5-bit global brightness for ``brightness`` in 0..1."""
    return max(0, min(MAX_BRIGHTNESS, round(brightness * MAX_BRIGHTNESS)))


def encode_frame(colors: Sequence[Color], brightness: int) -> bytes:
    """The bytes that show ``colors`` (components 0..1) at the 5-bit ``brightness``."""
    if not 0 <= brightness <= MAX_BRIGHTNESS:
        raise ValueError(f"brightness must be 0..{MAX_BRIGHTNESS}")
    out = bytearray(START_FRAME)
    marker = LED_MARKER | brightness
    for red, green, blue in colors:
        out += bytes((marker, _byte(blue), _byte(green), _byte(red)))
    out += b"\xff" * end_frame_bytes(len(colors))
    return bytes(out)


def end_frame_bytes(count: int) -> int:
    """Bytes of ones after ``count`` LEDs: at least ``count / 2`` bits, at least 32 bits."""
    return max(MIN_END_FRAME_BYTES, math.ceil(count / 16))


def _byte(component: float) -> int:
    return max(0, min(255, round(component * 255)))


def blink_level(
    t: float, on_time: float, off_time: float, fade_in: float, fade_out: float, frame: float
) -> tuple[float, float]:
    """How lit a blink is ``t`` seconds in (0..1), and how long that holds.

    A cycle is gpiozero's: fade in, on, fade out, off.  During a fade the
    level holds for one ``frame``; otherwise until the next edge.
    """
    period = fade_in + on_time + fade_out + off_time
    if period <= 0:
        return 1.0, math.inf
    p = t % period
    if p < fade_in:
        return p / fade_in, min(frame, fade_in - p)
    p -= fade_in
    if p < on_time:
        return 1.0, on_time - p
    p -= on_time
    if p < fade_out:
        return 1.0 - p / fade_out, min(frame, fade_out - p)
    p -= fade_out
    return 0.0, off_time - p


def blend(off_color: Color, on_color: Color, level: float) -> Color:
    """The colour ``level`` (0..1) of the way from ``off_color`` to ``on_color``."""
    r0, g0, b0 = off_color
    r1, g1, b1 = on_color
    return (r0 + (r1 - r0) * level, g0 + (g1 - g0) * level, b0 + (b1 - b0) * level)


def open_spidev(bus: int, device: int, speed_hz: int) -> SpiDevice:
    """``/dev/spidev<bus>.<device>`` opened in mode 0, or :class:`LedRingUnavailable`."""
    try:
        import spidev
    except ImportError as exc:
        raise LedRingUnavailable(
            "spidev is not installed (pip install 'appliance[hats]', or apt install python3-spidev)"
        ) from exc
    spi: SpiDevice = spidev.SpiDev()
    try:
        spi.open(bus, device)
    except OSError as exc:
        raise LedRingUnavailable(
            f"cannot open /dev/spidev{bus}.{device}: {exc.strerror or exc}"
            " (enable SPI: dtparam=spi=on; the user needs the 'spi' group)"
        ) from exc
    spi.max_speed_hz = speed_hz
    spi.mode = 0
    return spi


class APA102Ring:
    """``count`` APA102 LEDs showing one colour, with gpiozero's RGBLED methods.

    ``spi``: an opened SPI device (default: :func:`open_spidev` on ``bus``
    and ``device``).  ``brightness`` (0..1) is the 5-bit global brightness;
    colours scale within it.
    """

    def __init__(
        self,
        count: int,
        *,
        bus: int = 0,
        device: int = 1,
        speed_hz: int = 8_000_000,
        brightness: float = 0.25,
        frame_rate: float = 30.0,
        spi: SpiDevice | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if count < 1:
            raise ValueError("a ring has at least one LED")
        self.count = count
        self.brightness = brightness_bits(brightness)
        self.frame = 1.0 / frame_rate
        self._clock = clock
        self._spi: SpiDevice | None = spi if spi is not None else open_spidev(bus, device, speed_hz)
        self._lock = threading.Lock()  # one frame on the wire at a time
        self._color: Color = OFF
        self._stop = threading.Event()
        self._animation: threading.Thread | None = None
        self._write(OFF)

    # gpiozero's RGBLED interface ------------------------------------------

    @property
    def color(self) -> Color:
        return self._color

    @color.setter
    def color(self, value: Color) -> None:
        self._stop_animation()
        self._write(value)

    @property
    def is_lit(self) -> bool:
        return self._color != OFF

    def on(self) -> None:
        self.color = WHITE

    def off(self) -> None:
        self.color = OFF

    def blink(
        self,
        on_time: float = 1.0,
        off_time: float = 1.0,
        fade_in_time: float = 0.0,
        fade_out_time: float = 0.0,
        on_color: Color = WHITE,
        off_color: Color = OFF,
        n: int | None = None,
        background: bool = True,
    ) -> None:
        """Blink ``n`` times (None: until told otherwise), in the background by default."""
        self._stop_animation()
        timing = (on_time, off_time, fade_in_time, fade_out_time)
        self._stop = stop = threading.Event()
        if background:
            self._animation = threading.Thread(
                target=self._animate,
                args=(timing, on_color, off_color, n, stop),
                name="apa102-blink",
                daemon=True,
            )
            self._animation.start()
        else:
            self._animate(timing, on_color, off_color, n, stop)

    def pulse(
        self,
        fade_in_time: float = 1.0,
        fade_out_time: float = 1.0,
        on_color: Color = WHITE,
        off_color: Color = OFF,
        n: int | None = None,
        background: bool = True,
    ) -> None:
        """Fade in and out ``n`` times (None: until told otherwise)."""
        self.blink(0.0, 0.0, fade_in_time, fade_out_time, on_color, off_color, n, background)

    def close(self) -> None:
        """Stop blinking, turn every LED off and release the SPI device."""
        self._stop_animation()
        if self._spi is None:
            return
        try:
            self._write(OFF)
        finally:
            with self._lock:
                spi, self._spi = self._spi, None
                spi.close()

    @property
    def closed(self) -> bool:
        return self._spi is None

    # ---------------------------------------------------------------------

    def _write(self, color: Color) -> None:
        with self._lock:
            if self._spi is None:
                raise LedRingUnavailable("the LED ring is closed")
            self._spi.writebytes2(encode_frame([color] * self.count, self.brightness))
            self._color = color

    def _stop_animation(self) -> None:
        thread, self._animation = self._animation, None
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _animate(
        self,
        timing: tuple[float, float, float, float],
        on_color: Color,
        off_color: Color,
        n: int | None,
        stop: threading.Event,
    ) -> None:
        on_time, off_time, fade_in, fade_out = timing
        period = sum(timing)
        start = self._clock()
        shown: Color | None = None
        while not stop.is_set():
            t = self._clock() - start
            if n is not None and t >= n * period:
                self._write(off_color)
                return
            level, hold = blink_level(t, on_time, off_time, fade_in, fade_out, self.frame)
            color = blend(off_color, on_color, level)
            if color != shown:
                self._write(color)
                shown = color
            stop.wait(max(hold, 0.001))
