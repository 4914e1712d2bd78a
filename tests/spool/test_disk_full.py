"""A spool on a real 2 MB tmpfs that fills up: no crash, no corrupt file, a clear report,
and recording resumes when space returns. Real ENOSPC from the kernel, not a mock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from appliance.audio.ring import RingBuffer
from appliance.events import ErrorReported, EventBus
from appliance.spool import Spool, SpoolFull, SpoolParams
from appliance.spool import store as st
from appliance.spool.recorder import Recording
from tests.events import collect

RATE = 48000
BLOCK = RATE // 10


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "fs"
    mnt.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def signal_at(start: int, n: int) -> np.ndarray:
    """A sample value that encodes its own index, so every sample's place can be checked."""
    return (((np.arange(start, start + n) * 7919) % 65536) - 32768).astype(np.int16)


def read_pcm(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16)


def fill(path: Path, nbytes: int) -> None:
    with open(path, "wb") as f:
        f.write(b"\0" * nbytes)


def test_writer_hits_real_enospc_keeps_durable_audio_and_resumes(small_fs, caplog):
    bus = EventBus()
    errors = collect(bus, ErrorReported)
    spool = Spool(SpoolParams(small_fs / "spool", min_free_bytes=0), bus)
    filler = small_fs / "filler"
    fill(filler, 1_200_000)
    writer = spool.open_recording("record", RATE)
    written = 0
    with caplog.at_level(logging.ERROR, logger="appliance.spool"), pytest.raises(SpoolFull):
        for _ in range(1000):
            writer.write(signal_at(written, BLOCK))
            written += BLOCK
    assert "disk full" in str(spool.full_reason).lower() or "space" in str(spool.full_reason)
    full_lines = [r for r in caplog.records if "spool full" in r.getMessage()]
    assert len(full_lines) == 1 and len(errors) == 1
    with pytest.raises(SpoolFull):  # still full: refused again, cheaply, no new report
        writer.write(signal_at(written, BLOCK))
    assert len(errors) == 1
    writer.sync()
    seg = spool.segments(writer.id)[0]
    with wave.open(str(seg), "rb") as w:  # valid file holding exactly what was accepted
        assert w.getnframes() == written
    filler.unlink()
    writer.write(signal_at(written, BLOCK))  # space is back: the same recording continues
    rid = writer.close()
    assert spool.full_reason is None
    row = spool.get(rid)
    assert row.state == st.READY and row.data_bytes == 2 * (written + BLOCK)


async def test_recorder_counts_refused_audio_as_gap_and_resumes(small_fs):
    spool = Spool(SpoolParams(small_fs / "spool", min_free_bytes=0))
    filler = small_fs / "filler"
    fill(filler, 1_300_000)
    ring = RingBuffer(RATE, history_seconds=20)
    recording = Recording(ring, spool)
    fed = 0
    run = asyncio.create_task(recording.run(0))

    async def feed(blocks: int) -> None:
        nonlocal fed
        for _ in range(blocks):
            ring.write(signal_at(fed, BLOCK), t_first=fed / RATE)
            fed += BLOCK
            await asyncio.sleep(0.01)

    await feed(100)  # 10 s of 48 kHz audio into ~700 kB of room: the disk fills up
    for _ in range(200):
        if spool.full_reason:
            break
        await asyncio.sleep(0.02)
    assert spool.full_reason
    filler.unlink()
    await asyncio.sleep(0.6)  # the free-space estimate is refreshed
    await feed(10)
    recording.request_stop()
    account = await asyncio.wait_for(run, 20)

    assert account.refused_samples > 0
    assert account.samples_written + account.refused_samples == fed
    row = spool.get(account.recording_id)
    assert row.state == st.READY
    assert row.lost_samples == account.refused_samples
    audio = np.concatenate([read_pcm(p) for p in spool.segments(row.id)])
    # Rebuild the expected audio from the recorded gaps: every kept sample is in its place.
    expected, pos, index = [], 0, 0
    for gap in row.gaps:
        keep = gap["at"] - pos
        expected.append(signal_at(index, keep))
        index += keep + gap["samples"]
        pos = gap["at"]
    expected.append(signal_at(index, fed - index))
    np.testing.assert_array_equal(audio, np.concatenate(expected))
    assert index < fed  # something was recorded after space returned
    with contextlib.suppress(OSError):
        os.sync()
