"""``appliance check``'s acoustic part: is echo cancellation there, does the mic hear the speaker.

:func:`check_echo_cancel` asks the sound server (``pactl``) for the
``audio.echo_cancel`` source and sink. :func:`check_loopback` (``--loopback``)
opens the microphone and the speaker the way the daemon does, through the
canceller when one is named, plays the DTMF probe and hands the recording to
:mod:`appliance.audio.loopback`, which measures it; this module only does the
I/O and the report.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from appliance.audio import echo_cancel
from appliance.audio.loopback import analyse, probe_seconds, probe_signal

if TYPE_CHECKING:
    from appliance.audio.capture import AudioCapture
    from appliance.audio.playback import AudioPlayback
    from appliance.check import Report
    from appliance.config import Config

#: How long ``pactl`` may take to answer.
PACTL_TIMEOUT_SECONDS = 5.0
#: The room recorded before the probe: its noise floor.
QUIET_SECONDS = 0.5
#: How long the speaker must have been running before the probe (a new stream's start).
SPEAKER_SETTLE_SECONDS = 0.5
#: How long the speaker and microphone may take to start delivering.
START_TIMEOUT_SECONDS = 10.0
#: Recorded after the probe has drained: the latest echo still arrives within it.
TAIL_SECONDS = 1.0


def _pactl_lists() -> tuple[str, str, str] | str:
    """``pactl list short`` modules, sources, sinks; or why they could not be read."""
    if shutil.which("pactl") is None:
        return "pactl is not installed (Debian: pulseaudio-utils)"
    listings = []
    for kind in ("modules", "sources", "sinks"):
        try:
            result = subprocess.run(
                ["pactl", "list", "short", kind],
                capture_output=True,
                text=True,
                timeout=PACTL_TIMEOUT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"pactl failed: {exc}"
        if result.returncode != 0:
            return f"no sound server answered pactl: {result.stderr.strip()[:200]}"
        listings.append(result.stdout)
    return listings[0], listings[1], listings[2]


def check_echo_cancel(report: Report, config: Config) -> bool:
    """Report whether the configured canceller is on the sound server; True when active."""
    from appliance.check import FAIL, OK, SKIP, WARN

    named = config.audio.echo_cancel
    if named.source is None or named.sink is None:
        report.line(SKIP, "echo cancellation", "not configured (audio.echo_cancel)")
        return False
    if config.audio.source != "pyaudio" or config.audio.sink != "pyaudio":
        report.line(SKIP, "echo cancellation", "not used (audio from or to files)")
        return False
    lists = _pactl_lists()
    if isinstance(lists, str):
        report.line(WARN, "echo cancellation", f"cannot tell whether it is active: {lists}")
        return False
    found = echo_cancel.status(named.source, named.sink, *lists)
    if found.active:
        module = f" ({found.module})" if found.module else ""
        detail = f"active: source {named.source}, sink {named.sink}{module}"
        report.line(OK, "echo cancellation", detail)
        if config.agent.echo != "full_duplex":
            report.more("with it, agent.echo: full_duplex lets a person interrupt the agent")
        return True
    missing = [
        f"{kind} {name!r}"
        for kind, name, present in (
            ("source", named.source, found.source_present),
            ("sink", named.sink, found.sink_present),
        )
        if not present
    ]
    report.line(FAIL, "echo cancellation", f"the sound server has no {' or '.join(missing)}")
    report.more("load module-echo-cancel with these names (README 'Echo cancellation')")
    return False


def _master_source(source: str) -> str | None:
    """The canceller's raw microphone, as the sound server names it (None: unknown)."""
    listings = []
    for kind in ("sources", "source-outputs"):
        try:
            result = subprocess.run(
                ["pactl", "list", kind],
                capture_output=True,
                text=True,
                timeout=PACTL_TIMEOUT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if result.returncode != 0:
            return None
        listings.append(result.stdout)
    return echo_cancel.master_source(listings[0], source, listings[1])


@dataclass
class _Recorded:
    samples: np.ndarray
    probe_start: int
    rate: int


def _record(capture: AudioCapture, written_at: float) -> _Recorded:
    """The capture from QUIET_SECONDS before the probe was written until now."""
    ring = capture.ring
    first = max(ring.oldest_index, ring.index_at(written_at - QUIET_SECONDS))
    samples = ring.read(first, ring.write_index - first).samples.copy()
    return _Recorded(samples, ring.index_at(written_at) - first, ring.rate)


def _play_probe(config: Config, master: str | None) -> tuple[_Recorded, _Recorded | None]:
    """Open the streams as the daemon does (plus the raw microphone under a canceller),
    play the probe, and return what the microphone and the cancelled source recorded."""
    from appliance.audio.capture import AudioCapture
    from appliance.audio.playback import AudioPlayback
    from appliance.wiring import open_sink, open_source

    streams: list[AudioCapture | AudioPlayback] = []

    def opened(stream: object) -> Any:
        if not isinstance(stream, AudioCapture | AudioPlayback):
            raise RuntimeError("the microphone or the speaker is not a sound device")
        streams.append(stream)
        return stream

    try:
        raw: AudioCapture | None = None
        if master is not None:  # the same settings, on the canceller's master source
            under = copy.deepcopy(config)
            under.audio.echo_cancel.source = master
            raw = opened(open_source(under))
        microphone: AudioCapture = opened(open_source(config))
        speaker: AudioPlayback = opened(open_sink(config))
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not all(stream.last_callback_time for stream in streams):
            if time.monotonic() > deadline:
                raise RuntimeError("the microphone or the speaker delivers nothing")
            time.sleep(0.05)
        time.sleep(max(QUIET_SECONDS, SPEAKER_SETTLE_SECONDS))
        written_at = time.monotonic()
        speaker.write(probe_signal(speaker.input_rate))
        speaker.end_of_stream()
        if not speaker.wait_drained(probe_seconds() + START_TIMEOUT_SECONDS):
            raise RuntimeError("the speaker did not play the probe")
        time.sleep(TAIL_SECONDS)
        heard = _record(microphone, written_at)
        if raw is None:
            return heard, None
        return _record(raw, written_at), heard
    finally:
        for stream in reversed(streams):
            stream.stop()


def check_loopback(report: Report, config: Config, echo_cancel_active: bool) -> None:
    """Play the probe, record it, report what came back; a speaker not heard fails."""
    from appliance.check import FAIL, OK, SKIP, WARN

    audio = config.audio
    if audio.source != "pyaudio" or audio.sink != "pyaudio":
        report.line(
            SKIP, "loopback", "needs the microphone and the speaker (audio from or to files)"
        )
        return
    source = audio.echo_cancel.source
    master = _master_source(source) if echo_cancel_active and source else None
    try:
        recorded, cancelled = _play_probe(config, master)
    except Exception as exc:
        report.line(FAIL, "loopback", f"could not play and record: {exc}")
        return
    result = analyse(
        recorded.samples,
        recorded.rate,
        recorded.probe_start,
        cancelled=None if cancelled is None else cancelled.samples,
        cancelled_probe_start=0 if cancelled is None else cancelled.probe_start,
    )
    levels = f"echo {result.echo_dbfs:.0f} dBFS, noise floor {result.noise_floor_dbfs:.0f} dBFS"
    if not result.heard:
        got = f"decoded {result.decoded!r}" if result.decoded else "nothing decoded"
        if echo_cancel_active and master is None:
            report.line(
                WARN,
                "loopback",
                f"the probe is not heard through the echo canceller ({got}, {levels}); "
                "its raw microphone is unknown, so the speaker itself was not checked",
            )
            return
        report.line(FAIL, "loopback", f"the speaker was not heard ({got} of {result.expected!r})")
        report.more(levels)
        report.more("turn the speaker up, or check it faces the microphone and is the one used")
        return
    latency = result.latency_s or 0.0
    report.line(OK, "loopback", f"heard {result.expected} after {latency * 1000:.0f} ms; {levels}")
    if result.cancelled_echo_dbfs is not None and result.suppression_db is not None:
        report.more(
            f"after echo cancellation: {result.cancelled_echo_dbfs:.0f} dBFS "
            f"({result.suppression_db:.0f} dB lower), on {source}; raw microphone {master}"
        )
    if result.clipped_samples:
        report.line(
            WARN,
            "loopback",
            f"{result.clipped_samples} samples clipped: turn the speaker or the mic gain down",
        )
    else:
        report.more("no clipping")
    report.more(f"recommended agent.echo: {result.recommendation} ({result.reason})")
    if config.agent.echo != result.recommendation:
        report.more(f"configured agent.echo: {config.agent.echo}")
