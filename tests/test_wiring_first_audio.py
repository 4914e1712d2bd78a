"""The daemon opens its other parts while the microphone's first block is on its way."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import numpy as np

from appliance.audio.ring import RingBuffer
from appliance.wiring import _first_audio


async def test_first_audio_is_done_only_once_a_block_has_landed() -> None:
    ring = RingBuffer(16_000, history_seconds=1.0)
    arrived = _first_audio(SimpleNamespace(ring=ring), asyncio.get_running_loop())  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert not arrived.done()
    writer = threading.Thread(target=ring.write, args=(np.zeros(160, np.int16), time.monotonic()))
    writer.start()  # the capture thread delivers its first block
    await asyncio.wait_for(arrived, 5.0)
    writer.join()
    assert ring.write_index == 160


async def test_first_audio_already_in_the_ring_is_done_at_once() -> None:
    ring = RingBuffer(16_000, history_seconds=1.0)
    ring.write(np.zeros(160, np.int16), time.monotonic())
    arrived = _first_audio(SimpleNamespace(ring=ring), asyncio.get_running_loop())  # type: ignore[arg-type]
    await asyncio.wait_for(arrived, 5.0)
