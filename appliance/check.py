"""``appliance check``: a preflight for whoever sets the device up.

One line per part, ✓ or ✗ with what to do about it, in the order a person
would fix things: configuration, credential, sound server (PipeWire,
PulseAudio or plain ALSA), microphone (with a live level),
speaker (optional test tone), echo cancellation, with ``--loopback`` the
speaker as the microphone hears it (appliance/loopback_check.py), GPIO,
the cloud, the spool. Exit codes:
0 all good, 3 configuration invalid, 5 something failed, 6 only the cloud is
unreachable (the device still works: recordings are kept for later).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import socket
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import numpy as np

from appliance.audio.server import PIPEWIRE_ALSA_DEFAULT, find_sound_server
from appliance.audio.watchdog import StreamLimits
from appliance.config import (
    Config,
    ConfigError,
    LedConfig,
    capture_block_ms,
    find_config_path,
    load_config,
)
from appliance.exitcodes import ExitCode

#: How long the cloud probe may take before the device counts as offline.
PROBE_TIMEOUT_SECONDS = 4.0
#: How often the live microphone level is printed.
LEVEL_INTERVAL_SECONDS = 0.25
#: A microphone quieter than this for the whole check is probably muted or unplugged.
SILENT_DBFS = -70.0
#: How long to wait for the first microphone block: the streams' start-up grace.
FIRST_BLOCK_TIMEOUT_SECONDS = StreamLimits().startup_grace
TONE_HZ = 440.0
TONE_SECONDS = 0.6
RING_SHOW_SECONDS = 0.3  # long enough to see every LED of the ring light
DEFAULT_OUTPUT_RATE = 24000

OK, FAIL, WARN, SKIP = "✓", "✗", "!", "–"


class Report:
    """Collects check lines and decides the exit code."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.failed: list[str] = []
        self.offline = False

    def line(self, mark: str, label: str, detail: str = "") -> None:
        text = f"{mark} {label}" + (f": {detail}" if detail else "")
        print(text, file=self.out, flush=True)
        if mark == FAIL:
            self.failed.append(label)

    def more(self, text: str) -> None:
        print(f"    {text}", file=self.out, flush=True)

    def exit_code(self) -> int:
        if self.failed:
            return ExitCode.CHECK_FAILED
        if self.offline:
            return ExitCode.OFFLINE
        return ExitCode.OK


def run_check(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run every check, print the report, return the exit code (see module doc)."""
    report = Report(out or sys.stdout)
    path = find_config_path(getattr(args, "config", None))
    try:
        config = load_config(path, resolve_secrets=False)
    except ConfigError as exc:
        report.line(FAIL, "configuration", f"{len(exc.problems)} problem(s)")
        for problem in exc.problems:
            report.more(str(problem))
        return ExitCode.CONFIG
    report.line(OK, "configuration", f"{config.source} (mode: {config.mode})")

    config = check_credential(report, path, config)
    # Every stream the check opens goes where the daemon's go: through the canceller.
    from appliance.audio import echo_cancel

    echo_cancel.select(config.audio.echo_cancel.source, config.audio.echo_cancel.sink)
    check_sound_server(report, config)
    seconds = max(0.0, float(getattr(args, "seconds", 2.0) or 0.0))
    check_microphone(report, config, seconds)
    check_speaker(report, config, bool(getattr(args, "tone", False)))
    from appliance.loopback_check import check_echo_cancel, check_loopback

    echo_cancel_active = check_echo_cancel(report, config)
    if getattr(args, "loopback", False):
        check_loopback(report, config, echo_cancel_active)
    check_gpio(report, config)
    check_cloud(report, config)
    check_summary(report, config)
    check_spool(report, config)
    code = report.exit_code()
    summary = {
        ExitCode.OK: "ready",
        ExitCode.OFFLINE: "ready, but offline: recordings will be kept and uploaded later",
        ExitCode.CHECK_FAILED: "not ready: fix " + ", ".join(report.failed),
    }[ExitCode(code)]
    print(f"\n{summary}", file=report.out, flush=True)
    return code


# --------------------------------------------------------------- credential


def check_credential(report: Report, path: Path | None, config: Config) -> Config:
    """Load the secrets too; on failure keep the secret-less config for the other checks."""
    try:
        full = load_config(path, resolve_secrets=True)
    except ConfigError as exc:
        report.line(FAIL, "credential", "not readable")
        for problem in exc.problems:
            report.more(str(problem))
        return config
    if full.auth.token_broker.url:
        source = full.broker_credential.source if full.broker_credential else "?"
        report.line(OK, "credential", f"token-broker credential from {source}")
    elif full.api_key is not None:
        report.line(OK, "credential", f"API key from {full.api_key.source}")
    for warning in full.warnings:
        report.line(WARN, "credential", str(warning))
    return full


# ------------------------------------------------------------- sound server


def check_sound_server(
    report: Report,
    config: Config,
    environ: dict[str, str] | None = None,
    pipewire_alsa_default: Path = PIPEWIRE_ALSA_DEFAULT,
) -> None:
    """Say which sound server the audio goes through, and when ALSA's default leads nowhere."""
    audio = config.audio
    devices = [
        d
        for used, d in ((audio.source, audio.input_device), (audio.sink, audio.output_device))
        if used == "pyaudio"
    ]
    if not devices:
        report.line(SKIP, "sound server", "not used (audio from and to files)")
        return
    server = find_sound_server(environ, pipewire_alsa_default)
    if server.alsa_default_unreachable and any(d in (None, "default", "pipewire") for d in devices):
        report.line(WARN, "sound server", server.describe())
        report.more("ALSA's default device is PipeWire's, but no PipeWire is reachable from here")
        report.more("(no pipewire-0 socket in XDG_RUNTIME_DIR): run in the desktop session,")
        report.more(
            "or name the card in audio.input_device / audio.output_device ('appliance devices')"
        )
        return
    report.line(OK, "sound server", server.describe())


# --------------------------------------------------------------- microphone


def _dbfs(samples: np.ndarray) -> float:
    if len(samples) == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    return 20 * math.log10(rms / 32768) if rms > 0 else -120.0


def _meter(dbfs: float, width: int = 30) -> str:
    filled = round(width * max(0.0, min(1.0, (dbfs + 80) / 80)))
    return "#" * filled + "." * (width - filled)


def check_microphone(report: Report, config: Config, seconds: float) -> None:
    audio = config.audio
    if audio.source == "file":
        _check_file_source(report, config, seconds)
        return
    try:
        from appliance.audio.capture import AudioCapture
    except ImportError as exc:  # pragma: no cover - PyAudio is a runtime dependency
        report.line(FAIL, "microphone", f"audio support missing ({exc.name})")
        return
    capture = AudioCapture(
        audio.input_device,
        audio.input_rate,
        channel=audio.input_channel,
        channels=audio.input_channels,
        mix_channels=None if audio.input_mix is None else tuple(audio.input_mix),
        sample_format=audio.input_format,
        block_ms=capture_block_ms(config),
        history_seconds=max(2.0, seconds + 1.0),
    )
    try:
        capture.start()
    except Exception as exc:
        report.line(FAIL, "microphone", f"cannot open: {exc}")
        report.more("see 'appliance devices'; set audio.input_device / audio.input_rate")
        return
    try:
        deadline = time.monotonic() + FIRST_BLOCK_TIMEOUT_SECONDS
        while not capture.last_callback_time and time.monotonic() < deadline:
            time.sleep(0.05)
        if not capture.last_callback_time:
            report.line(FAIL, "microphone", f"{capture.device_label} opened but delivers no audio")
            return
        loudest = -120.0
        end = time.monotonic() + seconds
        while True:
            level = capture.level_dbfs(LEVEL_INTERVAL_SECONDS)
            loudest = max(loudest, level.rms_dbfs)
            if seconds > 0:
                report.more(f"level {level.rms_dbfs:6.1f} dBFS |{_meter(level.rms_dbfs)}|")
            if time.monotonic() >= end:
                break
            time.sleep(LEVEL_INTERVAL_SECONDS)
        overflows = f", {capture.overflows} overflows" if capture.overflows else ""
        detail = (
            f"{capture.device_label}, {capture.plan.describe()}, loudest {loudest:.0f} dBFS"
            f"{overflows}"
        )
        if loudest < SILENT_DBFS:
            report.line(WARN, "microphone", detail + " (silent: muted or unplugged?)")
        else:
            report.line(OK, "microphone", detail)
    finally:
        capture.stop()


def _check_file_source(report: Report, config: Config, seconds: float) -> None:
    path = config.audio.input_file
    try:
        with wave.open(str(path), "rb") as wav:
            rate, width, channels = wav.getframerate(), wav.getsampwidth(), wav.getnchannels()
            frames = wav.getnframes()
            head = wav.readframes(int(rate * max(seconds, 0.1)))
    except (OSError, EOFError, wave.Error) as exc:
        report.line(FAIL, "microphone", f"input file {path}: {exc}")
        return
    if width != 2:
        report.line(FAIL, "microphone", f"input file {path}: needs 16-bit PCM, has {8 * width}-bit")
        return
    samples = np.frombuffer(head, dtype="<i2")[config.audio.input_channel :: channels]
    level = _dbfs(samples)
    report.line(
        OK,
        "microphone",
        f"file {path.name if path else '?'}: {rate} Hz, {frames / rate:.1f} s, "
        f"level {level:.0f} dBFS",
    )


# ------------------------------------------------------------------ speaker


def check_speaker(report: Report, config: Config, tone: bool) -> None:
    audio = config.audio
    if audio.sink == "none":
        report.line(SKIP, "speaker", "disabled (audio.sink: none)")
        return
    if audio.sink == "file":
        target = audio.output_file
        parent = target.parent if target else Path(".")
        if os.access(parent, os.W_OK):
            report.line(OK, "speaker", f"writes to file {target}")
        else:
            report.line(FAIL, "speaker", f"cannot write to {parent}")
        return
    rate = audio.output_rate or DEFAULT_OUTPUT_RATE
    try:
        import pyaudio

        from appliance.audio.devices import find_device
    except ImportError as exc:  # pragma: no cover
        report.line(FAIL, "speaker", f"audio support missing ({exc.name})")
        return
    pa = pyaudio.PyAudio()
    try:
        device = find_device(pa, audio.output_device, "output")
        stream = pa.open(
            rate=rate,
            channels=1,
            format=pyaudio.paInt16,
            output=True,
            output_device_index=device.index,
        )
        try:
            if tone:
                t = np.arange(int(rate * TONE_SECONDS)) / rate
                envelope = np.minimum(1.0, np.minimum(t, TONE_SECONDS - t) / 0.02)
                wave_ = 0.3 * np.sin(2 * np.pi * TONE_HZ * t) * envelope
                stream.write((wave_ * 32767).astype("<i2").tobytes())
        finally:
            stream.stop_stream()
            stream.close()
    except Exception as exc:
        report.line(FAIL, "speaker", f"cannot open at {rate} Hz: {exc}")
        report.more("see 'appliance devices'; set audio.output_device / audio.output_rate")
        return
    finally:
        pa.terminate()
    played = f", played a {TONE_HZ:.0f} Hz tone" if tone else " (--tone plays a test tone)"
    report.line(OK, "speaker", f"{device.name} at {rate} Hz{played}")


# --------------------------------------------------------------------- GPIO


def check_gpio(report: Report, config: Config) -> None:
    button, led = config.button, config.led
    wanted: list[tuple[str, Any]] = []
    if button.enabled:
        wanted.append((f"button on GPIO{button.pin}", ("button", button.pin)))
    if led.kind == "apa102":
        check_led_ring(report, led)
    elif led.kind != "none":
        pins = ",".join(map(str, led.pins))
        wanted.append((f"{led.kind} LED on GPIO{pins}", ("led", led.kind, led.pins)))
    if not wanted and led.kind == "apa102":
        return
    if not wanted:
        how = "keyboard (Enter on stdin)" if button.keyboard else "none"
        report.line(SKIP, "GPIO", f"no button or LED configured; button input: {how}")
        return
    try:
        import gpiozero
    except ImportError as exc:  # pragma: no cover - gpiozero is a runtime dependency
        report.line(FAIL, "GPIO", f"gpiozero missing ({exc.name})")
        return
    for label, spec in wanted:
        device: Any = None
        try:
            if spec[0] == "button":
                device = gpiozero.Button(spec[1], pull_up=button.pull_up)
                state = "pressed" if device.is_pressed else "released"
                report.line(OK, "GPIO", f"{label} ({state})")
            else:
                kind, pins = spec[1], spec[2]
                if kind == "rgb":
                    device = gpiozero.RGBLED(*pins, active_high=led.active_high)
                elif kind == "pwm":
                    device = gpiozero.PWMLED(pins[0], active_high=led.active_high)
                else:
                    device = gpiozero.LED(pins[0], active_high=led.active_high)
                report.line(OK, "GPIO", label)
        except Exception as exc:
            report.line(FAIL, "GPIO", f"{label}: {type(exc).__name__}: {exc}")
            report.more(
                "on a desktop set button.enabled: false and button.keyboard: true; on a Pi "
                "the service user needs the 'gpio' group"
            )
        finally:
            if device is not None:
                device.close()


def check_led_ring(report: Report, led: LedConfig) -> None:
    """Open the HAT's APA102 ring, light it briefly in white at its brightness, and close it."""
    from appliance.controls.apa102 import APA102Ring, LedRingUnavailable

    where = f"/dev/spidev{led.spi_bus}.{led.spi_device}"
    try:
        ring = APA102Ring(
            led.count,
            bus=led.spi_bus,
            device=led.spi_device,
            speed_hz=led.spi_speed_hz,
            brightness=led.brightness,
        )
    except LedRingUnavailable as exc:
        report.line(FAIL, "LED ring", str(exc))
        return
    try:
        ring.on()
        time.sleep(RING_SHOW_SECONDS)
    finally:
        ring.close()
    report.line(OK, "LED ring", f"APA102 ring of {led.count} on {where} (lit white briefly)")


# -------------------------------------------------------------------- cloud


def check_cloud(report: Report, config: Config) -> None:
    """Mint one streaming token: proves the network path and the credential in one go."""
    from appliance.cloud.tokens import TokenAuthError, TokenError, token_source_for

    url = config.auth.token_broker.url or config.urls.streaming_token_url
    host = urlsplit(url).hostname or url
    has_credential = config.api_key is not None or config.broker_credential is not None
    if not has_credential:
        if _tcp_reachable(url):
            report.line(OK, "cloud", f"{host} reachable (credential not checked)")
        else:
            report.offline = True
            report.line(WARN, "cloud", f"offline: {host} unreachable; recordings will be kept")
        return
    try:
        source = token_source_for(config, "streaming")
        asyncio.run(asyncio.wait_for(source.fetch(), PROBE_TIMEOUT_SECONDS))
    except TokenAuthError as exc:
        report.line(FAIL, "cloud", f"{host} refused the credential ({exc})")
        return
    except (TokenError, TimeoutError, OSError) as exc:
        report.offline = True
        report.line(WARN, "cloud", f"offline: {host}: {exc}; recordings will be kept")
        return
    report.line(OK, "cloud", f"{host} reachable, credential accepted")


def check_summary(report: Report, config: Config) -> None:
    """Summaries need the key on the device; the gateway is not asked (every answer costs)."""
    summary = config.summary
    if not summary.enabled:
        return
    host = urlsplit(config.urls.llm_gateway_url).hostname
    if config.api_key is None:
        report.line(
            WARN,
            "summary",
            "enabled, but summaries need the API key on the device: the LLM Gateway takes "
            "the key itself and the token broker does not forward it; none will be made",
        )
        return
    report.line(OK, "summary", f"{summary.model} on {host} (not asked: each answer is charged)")


def _tcp_reachable(url: str) -> bool:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), PROBE_TIMEOUT_SECONDS):
            return True
    except OSError:
        return False


# -------------------------------------------------------------------- spool


def check_spool(report: Report, config: Config) -> None:
    """Writable, room to spare, a sound database; without those recording is refused."""
    directory = config.spool_path
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if existing == directory:
            with tempfile.NamedTemporaryFile(dir=directory, prefix=".check-") as probe:
                probe.write(b"x")
                probe.flush()
                os.fsync(probe.fileno())
        elif not os.access(existing, os.W_OK):
            raise PermissionError(f"{existing} is not writable")
    except OSError as exc:
        report.line(
            FAIL,
            "spool",
            f"unavailable: {directory}: {exc.strerror or exc}; live and agent modes still "
            "work, recording is refused",
        )
        return
    free = shutil.disk_usage(existing).free
    note = "" if existing == directory else " (will be created)"
    detail = f"{directory}{note}, {_size(free)} free"
    if free < config.spool.min_free_bytes:
        report.line(
            FAIL,
            "spool",
            f"{detail}; below spool.min_free_bytes {_size(config.spool.min_free_bytes)}",
        )
    else:
        minutes = (free - config.spool.min_free_bytes) / (16000 * 2 * 60)
        detail += f" (about {minutes:.0f} min of 16 kHz audio)"
        report.line(OK, "spool", detail)
    _check_spool_database(report, directory)


def _check_spool_database(report: Report, directory: Path) -> None:
    """A damaged database is repaired by the daemon at start; say so, and what it set aside."""
    from appliance.spool.repair import quarantined
    from appliance.spool.spool import DB_NAME
    from appliance.spool.store import find_damage

    database = directory / DB_NAME
    problem = find_damage(database)
    if problem is not None:
        report.line(
            WARN,
            "spool database",
            f"damaged ({problem}): the daemon sets it aside when it starts and rebuilds it "
            "from the recordings on disk",
        )
    for path in quarantined(database):
        report.more(f"a damaged spool database was set aside as {path}; delete it once checked")


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover
