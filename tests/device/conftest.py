"""Device tests: gpiozero on its mock pin factory, reset between tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin


def _use(factory: MockFactory) -> Iterator[MockFactory]:
    previous = Device.pin_factory
    Device.pin_factory = factory
    try:
        yield factory
    finally:
        factory.reset()
        Device.pin_factory = previous


@pytest.fixture
def mock_pins() -> Iterator[MockFactory]:
    """Plain mock pins (buttons, on/off LEDs)."""
    yield from _use(MockFactory())


@pytest.fixture
def mock_pwm_pins() -> Iterator[MockFactory]:
    """Mock pins that take PWM (dimmable and RGB LEDs)."""
    yield from _use(MockFactory(pin_class=MockPWMPin))
