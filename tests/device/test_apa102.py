"""A mic HAT's APA102 ring: the frame format on the wire, and the state patterns, on a fake spidev.

The fake stands in for the ``spidev`` module itself, so the ring is opened
as on a Pi (bus, device, mode, speed) and every byte it writes is recorded;
frames are decoded here from the datasheet's format, not with the driver's
own encoder.
"""

from __future__ import annotations

import io
import sys
import threading
import types
from collections.abc import Iterator
from typing import ClassVar

import pytest

from appliance.check import Report, check_led_ring
from appliance.config import LedConfig
from appliance.controls.apa102 import APA102Ring, LedRingUnavailable, blink_level, encode_frame
from appliance.controls.leds import STATES, StateLed, pattern_for

WAIT_SECONDS = 3.0


class FakeSpiDev:
    """Records what ``spidev.SpiDev`` is asked to do."""

    instances: ClassVar[list[FakeSpiDev]] = []

    def __init__(self) -> None:
        self.opened: tuple[int, int] | None = None
        self.closed = False
        self.max_speed_hz = 500_000
        self.mode = 3
        self.writes: list[bytes] = []
        self.wrote = threading.Condition()
        FakeSpiDev.instances.append(self)

    def open(self, bus: int, device: int) -> None:
        self.opened = (bus, device)

    def writebytes2(self, data: bytes) -> None:
        with self.wrote:
            self.writes.append(bytes(data))
            self.wrote.notify_all()

    def close(self) -> None:
        self.closed = True

    def wait_for_frame(self, count: int, predicate, timeout: float = WAIT_SECONDS) -> bool:
        """Wait (on the writes, not a clock) until a frame written from now on matches."""
        with self.wrote:
            seen = len(self.writes)

            def matched() -> bool:
                nonlocal seen
                new, seen = self.writes[seen:], len(self.writes)
                return any(predicate(decode(frame, count)) for frame in new)

            return self.wrote.wait_for(matched, timeout)


@pytest.fixture
def fake_spidev(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeSpiDev]]:
    FakeSpiDev.instances = []
    monkeypatch.setitem(sys.modules, "spidev", types.SimpleNamespace(SpiDev=FakeSpiDev))
    yield FakeSpiDev


def decode(frame: bytes, count: int) -> list[tuple[int, int, int, int]]:
    """(brightness, red, green, blue) of each of ``count`` LEDs, checking the frame's structure."""
    assert frame[:4] == bytes(4), "start frame: 32 zero bits"
    leds = []
    for at in range(4, 4 + 4 * count, 4):
        header, blue, green, red = frame[at : at + 4]
        assert header >> 5 == 0b111, f"LED frame starts 0b111, got {header:08b}"
        leds.append((header & 0b11111, red, green, blue))
    end = frame[4 + 4 * count :]
    assert end == b"\xff" * len(end), "end frame: all ones"
    assert 8 * len(end) >= count / 2 and len(end) >= 4, "end frame: >= n/2 and 32 bits"
    return leds


def test_a_frame_is_start_zeros_then_brightness_blue_green_red_per_led_then_ones() -> None:
    frame = encode_frame([(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 0.2)], brightness=7)
    assert frame == (
        bytes(4)
        + bytes([0xE7, 0, 0, 255])
        + bytes([0xE7, 0, 255, 0])
        + bytes([0xE7, 51, 0, 0])
        + b"\xff" * 4
    )


@pytest.mark.parametrize("count", [1, 3, 12, 64, 65, 255])
def test_the_end_frame_covers_half_a_bit_per_led(count: int) -> None:
    leds = decode(encode_frame([(0.5, 0.5, 0.5)] * count, brightness=31), count)
    assert leds == [(31, 128, 128, 128)] * count


def test_a_brightness_beyond_five_bits_is_refused() -> None:
    with pytest.raises(ValueError):
        encode_frame([(1.0, 1.0, 1.0)], brightness=32)


def test_a_blink_holds_each_level_until_its_next_edge_and_fades_frame_by_frame() -> None:
    assert blink_level(0.1, 0.5, 1.5, 0.0, 0.0, 0.05) == pytest.approx((1.0, 0.4))
    assert blink_level(0.7, 0.5, 1.5, 0.0, 0.0, 0.05) == pytest.approx((0.0, 1.3))
    assert blink_level(2.1, 0.5, 1.5, 0.0, 0.0, 0.05) == pytest.approx((1.0, 0.4))  # next cycle
    level, hold = blink_level(0.25, 0.0, 0.0, 1.0, 1.0, 0.05)  # a pulse, a quarter in
    assert (level, hold) == pytest.approx((0.25, 0.05))
    assert blink_level(1.5, 0.0, 0.0, 1.0, 1.0, 0.05)[0] == pytest.approx(0.5)  # fading out


def test_the_ring_opens_the_configured_spi_device_in_mode_0_dark(fake_spidev) -> None:
    ring = APA102Ring(12, bus=0, device=1, speed_hz=4_000_000, brightness=0.5)
    [spi] = fake_spidev.instances
    assert (spi.opened, spi.mode, spi.max_speed_hz) == ((0, 1), 0, 4_000_000)
    assert decode(spi.writes[-1], 12) == [(16, 0, 0, 0)] * 12
    ring.close()
    assert spi.closed and decode(spi.writes[-1], 12) == [(16, 0, 0, 0)] * 12


def test_the_state_led_shows_each_steady_state_on_every_led_of_the_ring(fake_spidev) -> None:
    led = StateLed(LedConfig(kind="apa102", count=3, brightness=1.0))
    led.open()
    [spi] = fake_spidev.instances
    led.show("listening")
    assert decode(spi.writes[-1], 3) == [(31, 0, 255, 0)] * 3  # green
    led.show("recording")
    assert decode(spi.writes[-1], 3) == [(31, 255, 0, 0)] * 3  # red
    led.show("idle")
    assert decode(spi.writes[-1], 3) == [(31, 0, 0, 38)] * 3  # dim blue
    led.close()
    assert spi.closed


def test_the_ring_shows_the_rgb_leds_patterns(fake_spidev) -> None:
    assert [pattern_for("apa102", s) for s in STATES] == [pattern_for("rgb", s) for s in STATES]


def test_a_blinking_state_turns_the_ring_on_and_off(fake_spidev) -> None:
    led = StateLed(LedConfig(kind="apa102", count=3, brightness=1.0))
    led.open()
    [spi] = fake_spidev.instances
    led.show("error")  # a fast red blink
    assert spi.wait_for_frame(3, lambda leds: leds == [(31, 255, 0, 0)] * 3)
    assert spi.wait_for_frame(3, lambda leds: leds == [(31, 0, 0, 0)] * 3)
    assert spi.wait_for_frame(3, lambda leds: leds == [(31, 255, 0, 0)] * 3)
    led.show("listening")  # steady again: the blink thread ended before the green frame
    assert decode(spi.writes[-1], 3) == [(31, 0, 255, 0)] * 3
    assert not [t for t in threading.enumerate() if t.name == "apa102-blink"]
    led.close()


def test_a_pulsing_state_fades_through_intermediate_levels(fake_spidev) -> None:
    led = StateLed(LedConfig(kind="apa102", count=2, brightness=1.0))
    led.open()
    [spi] = fake_spidev.instances
    led.show("connecting")  # a yellow pulse
    levels: set[int] = set()

    def partly_lit(leds) -> bool:
        red = leds[0][1]
        if 0 < red < 255:
            levels.add(red)
        return len(levels) >= 5

    assert spi.wait_for_frame(2, partly_lit)
    led.close()


def test_without_spidev_the_daemon_runs_unlit_and_check_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    monkeypatch.setitem(sys.modules, "spidev", None)  # import spidev raises ImportError
    led = StateLed(LedConfig(kind="apa102"))
    led.open()
    led.show("listening")
    assert led.device is None
    assert "spidev is not installed" in caplog.text
    out = io.StringIO()
    report = Report(out)
    check_led_ring(report, LedConfig(kind="apa102"))
    assert report.failed == ["LED ring"]
    assert "pip install 'appliance[hats]'" in out.getvalue()


def test_check_names_a_missing_spi_device(monkeypatch: pytest.MonkeyPatch) -> None:
    spidev = pytest.importorskip("spidev")  # the real extension, on a machine without SPI
    try:
        spidev.SpiDev().open(5, 3)
    except OSError:
        pass
    else:  # pragma: no cover - a machine with that SPI device
        pytest.skip("this machine has /dev/spidev5.3")
    with pytest.raises(LedRingUnavailable, match=r"cannot open /dev/spidev5\.3"):
        APA102Ring(3, bus=5, device=3)
    out = io.StringIO()
    report = Report(out)
    check_led_ring(report, LedConfig(kind="apa102", spi_bus=5, spi_device=3))
    assert "/dev/spidev5.3" in out.getvalue() and "dtparam=spi=on" in out.getvalue()
