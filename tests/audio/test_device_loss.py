"""Losing the audio server mid-capture: reported, retried with backoff, resumed, gap recorded."""

import logging
import threading
import time

import pytest

from appliance import dtmf
from appliance.audio.capture import AudioCapture, StreamState
from appliance.audio.playback import AudioPlayback
from tests.audio.signals import wait_for

pytestmark = pytest.mark.audio
log = logging.getLogger(__name__)

RATE = 48000


def test_capture_reports_device_loss_and_resumes_with_the_gap_recorded(pulse_server):
    events: list[tuple[StreamState, str]] = []
    lock = threading.Lock()

    def on_state(state: StreamState, detail: str) -> None:
        with lock:
            events.append((state, detail))

    cap = AudioCapture(rate=RATE, on_state=on_state, retry_initial=0.2, retry_max=1.0)
    out = AudioPlayback(retry_initial=0.2, retry_max=1.0)
    with cap, out:
        assert wait_for(lambda: cap.state == StreamState.RUNNING, 10.0)
        assert wait_for(lambda: out.state == StreamState.RUNNING, 10.0)
        assert not cap.reopening
        last_before = cap.ring.time_at(cap.ring.write_index)
        pulse_server.stop()  # the "USB microphone" disappears
        assert wait_for(lambda: cap.state == StreamState.LOST, 5.0), cap.state
        index_at_loss = cap.ring.write_index
        time.sleep(1.0)  # stays down across several retries
        assert cap.state == StreamState.LOST
        assert cap.reopening  # the watchdog takes this for a known state, not a hang
        pulse_server.start()
        restarted_at = time.monotonic()
        assert wait_for(lambda: cap.ring.write_index > index_at_loss, 15.0)
        resumed_by = time.monotonic()
        assert wait_for(lambda: cap.state == StreamState.RUNNING, 5.0)

        # Audio after the return arrives as usual.
        start = cap.ring.write_index
        assert pulse_server.play_into_mic(dtmf.generate("42", RATE), RATE).wait(timeout=10) == 0
        assert cap.ring.wait_until(cap.ring.write_index + RATE // 2, timeout=5)
        after = cap.ring.read(start, cap.ring.write_index - start)

        # The speaker came back too and plays.
        assert wait_for(lambda: out.state == StreamState.RUNNING, 10.0)
        out.write(dtmf.generate("7", 24000).tobytes())
        out.end_of_stream()
        assert out.wait_drained(timeout=5)
        assert out.losses == 1

    states = [state for state, _ in events]
    assert StreamState.LOST in states
    assert states.index(StreamState.LOST) < len(states) - 1 - states[::-1].index(
        StreamState.RUNNING
    )
    assert cap.losses == 1
    (gap,) = cap.ring.discontinuities
    assert gap.index == index_at_loss  # the index did not jump; the gap is a record
    # The gap spans at least the time the server was down and at most until
    # the first block came back.
    assert (restarted_at - last_before) * RATE <= gap.missing_samples
    assert gap.missing_samples <= (resumed_by - last_before) * RATE
    assert after.lost == 0
    assert dtmf.decode_digits(after.samples, RATE) == "42"
    log.info(
        "device loss: %s; gap %.2f s",
        [f"{s.value}: {d}" for s, d in events],
        gap.missing_samples / RATE,
    )
