"""Fixtures of the voice-agent tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from appliance.audio.ring import RingBuffer
from tests.agent.helpers import CAPTURE_RATE, Feeder


@pytest.fixture
def ring() -> Iterator[RingBuffer]:
    """A 10 s capture ring fed in real time by a :class:`Feeder` (``ring.feeder``)."""
    ring = RingBuffer(CAPTURE_RATE, 10.0)
    feeder = Feeder(ring)
    feeder.start()
    ring.feeder = feeder  # type: ignore[attr-defined]
    yield ring
    feeder.halt.set()
    feeder.join(2)
