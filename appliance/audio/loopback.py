"""What a speaker-to-microphone recording says about the device's acoustic path (no I/O).

``appliance check --loopback`` plays :func:`probe_signal` (a short DTMF
sequence) through the speaker while the microphone records, then hands the
recording to :func:`analyse`. The digits decoded from the recording say
whether the speaker is heard at all; the lag of the probe's best match
(cross-correlation) is the round trip from writing the probe to hearing it;
the level over the matched span is the echo a reply would make; the quiet
before the probe is the noise floor. With an echo canceller the speaker is
judged on the canceller's raw microphone and the echo on its cancelled
source, recorded over the same time (a canceller removes the probe too, so
its source alone cannot tell a working canceller from a dead speaker). From
those comes the echo setting to recommend for the voice agent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from appliance import dtmf

#: The probe's digits: distinct, spread over the keypad's rows and columns.
PROBE_DIGITS = "1590#"
PROBE_TONE_MS = 120
PROBE_GAP_MS = 80
#: Peak of the probe as a fraction of full scale: about as loud as a loud reply.
PROBE_AMPLITUDE = 0.5
#: How late the probe may arrive and still be matched (Bluetooth-class output is ~0.3 s).
MAX_LATENCY_SECONDS = 1.0
#: The quietest block the decoder takes for a tone: far below speech, above a quiet room.
DECODE_MIN_DBFS = -70.0
#: An echo at most this loud (RMS over the probe, at the source the daemon records) is
#: ~25 dB under speech at arm's length (about -25 dBFS), too quiet to pass for the person
#: talking: full duplex is safe.
FULL_DUPLEX_MAX_ECHO_DBFS = -50.0
#: A sample at either end of the int16 range is clipped.
CLIP_LEVEL = 32767
SILENCE_DBFS = -120.0

Recommendation = Literal["half_duplex", "full_duplex"]


def probe_signal(rate: int) -> np.ndarray:
    """The probe as mono int16 at ``rate`` Hz, with no silence before or after."""
    return dtmf.generate(
        PROBE_DIGITS,
        rate,
        tone_ms=PROBE_TONE_MS,
        gap_ms=PROBE_GAP_MS,
        lead_ms=0,
        trail_ms=0,
        amplitude=PROBE_AMPLITUDE,
    )


def probe_seconds() -> float:
    """How long the probe sounds."""
    count = len(PROBE_DIGITS)
    return (count * PROBE_TONE_MS + (count - 1) * PROBE_GAP_MS) / 1000


@dataclass(frozen=True)
class LoopbackResult:
    """The measured path; ``latency_s`` is None when the probe was not heard.

    ``echo_dbfs`` is the probe at the microphone; ``cancelled_echo_dbfs`` what
    is left of it at the canceller's source (None without a canceller).
    """

    expected: str
    decoded: str
    latency_s: float | None
    echo_dbfs: float
    cancelled_echo_dbfs: float | None
    noise_floor_dbfs: float
    clipped_samples: int
    recommendation: Recommendation
    reason: str

    @property
    def heard(self) -> bool:
        """Every digit came back, in order: the speaker reaches the microphone."""
        return self.decoded == self.expected

    @property
    def suppression_db(self) -> float | None:
        """How far the canceller lowered the probe."""
        if self.cancelled_echo_dbfs is None:
            return None
        return self.echo_dbfs - self.cancelled_echo_dbfs


def dbfs(samples: np.ndarray) -> float:
    """RMS level in dBFS (a full-scale sine is about -3)."""
    if len(samples) == 0:
        return SILENCE_DBFS
    rms = math.sqrt(float(np.mean(np.square(samples.astype(np.float64)))))
    return max(SILENCE_DBFS, 20 * math.log10(rms / 32768)) if rms > 0 else SILENCE_DBFS


def clipped(samples: np.ndarray) -> int:
    """How many samples sit at the ends of the int16 range."""
    return int(np.count_nonzero(np.abs(samples.astype(np.int32)) >= CLIP_LEVEL))


def decoded_digits(samples: np.ndarray, rate: int) -> str:
    """The DTMF digits in ``samples``, decoded down to :data:`DECODE_MIN_DBFS`."""
    decoder = dtmf.DtmfDecoder(rate, min_level_dbfs=DECODE_MIN_DBFS)
    events = decoder.feed(samples) + decoder.flush()
    return "".join(event.digit for event in events)


def best_lag(recording: np.ndarray, probe: np.ndarray, max_lag: int) -> int:
    """The lag (0..max_lag samples) at which ``probe`` best matches ``recording``."""
    n = len(probe) + max_lag
    segment = np.zeros(n, dtype=np.float64)
    head = recording[:n].astype(np.float64)
    segment[: len(head)] = head
    size = 1 << (n + len(probe)).bit_length()
    spectrum = np.fft.rfft(segment, size) * np.conj(np.fft.rfft(probe.astype(np.float64), size))
    correlation = np.fft.irfft(spectrum, size)[: max_lag + 1]
    return int(np.argmax(correlation))


def recommend(
    heard: bool, echo_dbfs: float, cancelled_echo_dbfs: float | None
) -> tuple[Recommendation, str]:
    """``agent.echo`` for this path, and why: full duplex only when the echo the daemon
    records (after the canceller, if there is one) is at most FULL_DUPLEX_MAX_ECHO_DBFS."""
    limit = f"{FULL_DUPLEX_MAX_ECHO_DBFS:.0f} dBFS"
    if not heard:
        return "half_duplex", "the speaker was not heard, so the echo is unknown"
    if cancelled_echo_dbfs is not None:
        if cancelled_echo_dbfs <= FULL_DUPLEX_MAX_ECHO_DBFS:
            return "full_duplex", f"echo cancellation leaves at most {limit} of the echo"
        return (
            "half_duplex",
            f"echo cancellation leaves more than {limit} of the echo: the agent would hear "
            "its own replies",
        )
    if echo_dbfs <= FULL_DUPLEX_MAX_ECHO_DBFS:
        return "full_duplex", f"the echo is at most {limit}"
    return (
        "half_duplex",
        f"the echo is above {limit} and no echo cancellation is active: the agent would "
        "hear its own replies",
    )


def analyse(
    recording: np.ndarray,
    rate: int,
    probe_start: int,
    *,
    cancelled: np.ndarray | None = None,
    cancelled_probe_start: int = 0,
) -> LoopbackResult:
    """Measure the path from ``recording`` (mono int16 at ``rate``).

    ``probe_start`` is the recording's sample index at which the probe was
    written to the speaker; what comes before it is the room's quiet.
    ``cancelled``: the echo canceller's source over the same time (its probe
    written at ``cancelled_probe_start``), measured at the same lag.
    """
    recording = np.asarray(recording, dtype=np.int16).reshape(-1)
    probe_start = max(0, min(probe_start, len(recording)))
    probe = probe_signal(rate)
    max_lag = round(MAX_LATENCY_SECONDS * rate)
    after = recording[probe_start:]
    decoded = decoded_digits(after, rate)
    heard = decoded == PROBE_DIGITS
    latency_s: float | None = None
    lag, span = 0, len(probe) + max_lag  # unheard: the whole time the probe may sound
    if heard:
        lag = best_lag(after, probe, max_lag)
        latency_s = lag / rate
        span = len(probe)
    echo_dbfs = dbfs(after[lag : lag + span])
    cancelled_echo_dbfs = None
    if cancelled is not None:
        start = max(0, cancelled_probe_start) + lag
        cancelled_echo_dbfs = dbfs(np.asarray(cancelled, dtype=np.int16)[start : start + span])
    recommendation, reason = recommend(heard, echo_dbfs, cancelled_echo_dbfs)
    return LoopbackResult(
        expected=PROBE_DIGITS,
        decoded=decoded,
        latency_s=latency_s,
        echo_dbfs=echo_dbfs,
        cancelled_echo_dbfs=cancelled_echo_dbfs,
        noise_floor_dbfs=dbfs(recording[:probe_start]),
        clipped_samples=clipped(recording),
        recommendation=recommendation,
        reason=reason,
    )
