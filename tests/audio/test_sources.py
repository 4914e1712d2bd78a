"""The WAV stand-ins for microphone and speaker (no audio stack needed)."""

import asyncio
import threading
import time
import tracemalloc
import wave

import numpy as np

from appliance import dtmf
from appliance.audio.playback import PlaybackState
from appliance.audio.ring import wake_loop
from appliance.audio.sources import FileSink, FileSource
from appliance.audio.stream import StreamState
from tests.audio.signals import wait_for


def test_file_source_plays_the_wav_into_the_ring_in_real_time(tmp_path):
    path = tmp_path / "in.wav"
    digits = dtmf.generate("147", 16000, lead_ms=50, trail_ms=50)
    dtmf.write_wav(path, digits, 16000)
    source = FileSource(path, lead_silence_seconds=0.1, trail_silence_seconds=0.1, block_ms=20)
    started = time.monotonic()
    with source:
        assert source.state == StreamState.RUNNING
        assert source.finished.wait(timeout=5)
        elapsed = time.monotonic() - started
        heard = source.ring.read(0, source.program_samples).samples
    assert dtmf.decode_digits(heard, 16000) == "147"
    np.testing.assert_array_equal(heard[1600 : 1600 + len(digits)], digits)
    # Paced, not dumped: it cannot have been faster than real time.
    assert elapsed >= source.program_samples / 16000 - 0.05
    span = source.ring.time_at(source.program_samples) - source.ring.time_at(0)
    assert abs(span - source.program_samples / 16000) < 0.01
    assert source.overflows == 0 and source.seconds_since_last_block() < 1.0


def test_file_source_loops_and_picks_a_channel_and_rate(tmp_path):
    path = tmp_path / "stereo.wav"
    left = dtmf.generate("9", 48000, lead_ms=20, trail_ms=20)
    right = dtmf.generate("3", 48000, lead_ms=20, trail_ms=20)
    dtmf.write_wav(path, np.stack([left, right], axis=1), 48000)
    with FileSource(path, rate=16000, channel=1, loop=True, block_ms=20) as source:
        loop_len = source.program_samples
        assert source.rate == 16000
        assert source.ring.wait_until(3 * loop_len, timeout=5)
        heard = source.ring.read(0, 3 * loop_len).samples
    assert dtmf.decode_digits(heard, 16000) == "333"


def test_file_source_reads_the_wav_as_it_plays_not_whole(tmp_path):
    path = tmp_path / "long.wav"
    minutes = np.zeros(16000 * 120, dtype=np.int16)  # two minutes: 3.8 MB of samples
    dtmf.write_wav(path, minutes, 16000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        source = FileSource(path, block_ms=20, history_seconds=2.0)
        source._tick(time.monotonic())
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert source.program_samples == len(minutes)
    assert held < 400_000  # the ring (2 s) and half a second read ahead, not 3.8 MB


def read_wav(path):
    with wave.open(str(path), "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2"), w.getframerate()


def test_file_source_paced_by_an_event_loop_writes_on_that_loop_without_a_thread(tmp_path):
    path = tmp_path / "in.wav"
    dtmf.write_wav(path, dtmf.generate("369", 16000, lead_ms=50, trail_ms=50), 16000)

    async def main() -> tuple[str, set[int], int]:
        loop = asyncio.get_running_loop()
        threads_before = threading.active_count()
        source = FileSource(path, lead_silence_seconds=0.1, block_ms=20, event_loop=loop)
        writers: set[int] = set()
        write = source.ring.write
        source.ring.write = lambda *a: (writers.add(threading.get_ident()), write(*a))[1]
        source.start()
        assert threading.active_count() == threads_before
        heard = asyncio.Event()
        source.ring.call_when_written(source.program_samples, wake_loop(loop, heard.set))
        await asyncio.wait_for(heard.wait(), timeout=5)
        digits = dtmf.decode_digits(source.ring.read(0, source.program_samples).samples, 16000)
        await asyncio.to_thread(source.stop)  # the daemon's closers may run off the loop
        blocks = source.blocks
        await asyncio.sleep(0.1)
        return digits, writers - {threading.get_ident()}, source.blocks - blocks

    digits, other_writers, blocks_after_stop = asyncio.run(main())
    assert digits == "369"
    assert other_writers == set()  # every block was written on the loop's thread
    assert blocks_after_stop == 0


def test_file_sink_paced_by_an_event_loop_writes_the_reply(tmp_path):
    path = tmp_path / "out.wav"
    reply = dtmf.generate("58", 24000, lead_ms=20, trail_ms=20)

    async def main() -> None:
        sink = FileSink(path, input_rate=24000, event_loop=asyncio.get_running_loop())
        sink.start()
        sink.write(reply.tobytes())
        sink.end_of_stream()
        assert await asyncio.to_thread(sink.wait_drained, 5)
        sink.stop()

    asyncio.run(main())
    samples, rate = read_wav(path)
    assert dtmf.decode_digits(samples, rate) == "58"


def test_file_sink_writes_what_would_be_played_and_drains(tmp_path):
    path = tmp_path / "out.wav"
    reply = dtmf.generate("2468", 24000, lead_ms=20, trail_ms=20)
    sink = FileSink(path, input_rate=24000)
    with sink:
        threads = [
            threading.Thread(target=sink.write, args=(reply[i : i + 2400].tobytes(),))
            for i in range(0, len(reply), 2400)
        ]
        for thread in threads:  # written in order, from other threads
            thread.start()
            thread.join()
        sink.end_of_stream()
        assert sink.wait_drained(timeout=5)
        assert sink.idle and sink.underruns == 0
    samples, rate = read_wav(path)
    assert rate == 24000
    assert dtmf.decode_digits(samples, rate) == "2468"
    assert len(samples) >= len(reply)


def test_file_sink_flush_drops_the_rest_of_the_reply(tmp_path):
    path = tmp_path / "out.wav"
    sink = FileSink(path, rate=48000, input_rate=24000)  # resampled on the way
    with sink:
        sink.write(dtmf.generate("13579", 24000, lead_ms=0).tobytes())
        assert wait_for(lambda: sink.playing, 5.0)
        time.sleep(0.45)
        sink.flush()
        assert sink.playback_state == PlaybackState.IDLE
        time.sleep(0.2)
    samples, rate = read_wav(path)
    got = dtmf.decode_digits(samples, rate)
    assert rate == 48000 and 1 <= len(got) < 5 and "13579".startswith(got)
