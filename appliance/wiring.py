"""Building the daemon's parts from the configuration.

Kept apart from ``daemon.py`` so the daemon reads as its control flow, and
this module as the one place that knows which class serves which setting.
Heavy modules are imported here, inside functions, so a mode that is not used
costs no import time or memory (a Pi Zero 2 W has 512 MB).
"""

from __future__ import annotations

import asyncio
import logging
import typing
from typing import TYPE_CHECKING, Any

from appliance.events import ErrorReported, SpoolStatus, StateChanged

if TYPE_CHECKING:
    from appliance.config import Config
    from appliance.daemon import Daemon, SessionRunner
    from appliance.modes import Mode
    from appliance.protocol.retry import RetryLimits

log = logging.getLogger("appliance.daemon")

# Earcons on a reply that could not be delivered live and was kept for later.
SAVED_NOTICE = "saved"


def open_source(
    config: Any, on_state: Any = None, event_loop: asyncio.AbstractEventLoop | None = None
) -> Any:
    """The microphone (PortAudio) or a paced WAV, started, feeding a ring buffer.

    A WAV is paced by timers on ``event_loop`` when given (the daemon's: its
    sessions consume the audio there, so a block and its work share a wake-up).
    """
    audio = config.audio
    if audio.source == "file":
        from appliance.audio.sources import FileSource

        source = FileSource(
            audio.input_file,
            history_seconds=audio.history_seconds,
            block_ms=audio.block_ms,
            on_state=on_state,
            event_loop=event_loop,
        )
    else:
        from appliance.audio.capture import AudioCapture

        source = AudioCapture(
            audio.input_device,
            audio.input_rate,
            channel=audio.input_channel,
            block_ms=audio.block_ms,
            history_seconds=audio.history_seconds,
            on_state=on_state,
        )
    source.start()
    return source


def open_sink(config: Any, event_loop: asyncio.AbstractEventLoop | None = None) -> Any:
    """The speaker (a persistent PortAudio stream), a WAV file, or nothing.

    A WAV sink is paced on ``event_loop`` when given, like :func:`open_source`.
    """
    audio = config.audio
    if audio.sink == "none":
        return None
    if audio.sink == "file":
        from appliance.audio.sources import FileSink

        sink = FileSink(
            audio.output_file,
            jitter_buffer_ms=audio.jitter_buffer_ms,
            volume=audio.volume,
            event_loop=event_loop,
        )
    else:
        from appliance.audio.playback import AudioPlayback

        sink = AudioPlayback(
            audio.output_device,
            audio.output_rate,
            jitter_buffer_ms=audio.jitter_buffer_ms,
            block_ms=audio.output_block_ms,
            volume=audio.volume,
        )
    sink.start()
    return sink


async def build_components(daemon: Daemon) -> None:
    """Open everything the daemon needs, registering how to close each part."""
    config = daemon.config
    events = daemon.events
    closers = daemon._closers

    # Audio first: READY means the microphone delivers.
    def on_capture_state(state: Any, detail: str) -> None:
        name = getattr(state, "value", str(state))
        if name == "lost":
            mode = typing.cast("Mode", daemon.controller.mode)
            events.publish(StateChanged(state="error", mode=mode, detail="microphone missing"))
            events.publish(ErrorReported(message=f"microphone lost: {detail}", where="capture"))
        elif name == "running" and daemon._session is None:
            daemon._publish_idle()

    loop = asyncio.get_running_loop()
    daemon.source = await asyncio.to_thread(open_source, config, on_capture_state, loop)
    closers.append(daemon.source.stop)
    if not await asyncio.to_thread(_wait_first_audio, daemon.source):
        raise RuntimeError("the microphone delivered no audio")
    daemon.playback = await asyncio.to_thread(open_sink, config, loop)
    if daemon.playback is not None:
        closers.append(daemon.playback.stop)
    if daemon.playback is not None and config.audio.source == config.audio.sink == "pyaudio":
        # The microphone may hear the speaker: its earcons stay out of every session's audio.
        from appliance.audio.own_sound import link_own_sound

        link_own_sound(daemon.ring, daemon.playback, config.audio.echo_tail_ms / 1000)

    # Status, watchdog, LEDs, earcons.
    from appliance.controls import EarconPlayer, StateLed
    from appliance.service import Watchdog, capture_liveness

    daemon._background.append(asyncio.create_task(daemon.notifier.follow(events)))
    watchdog = Watchdog(daemon.notifier, capture_liveness(daemon.source))
    watchdog.start()
    closers.append(watchdog.stop)
    if config.led.kind != "none":
        led = StateLed(config.led)
        led.open()
        closers.append(led.close)
        daemon._background.append(asyncio.create_task(led.follow(events)))
    if daemon.playback is not None and config.earcons.enabled:
        daemon.earcons = EarconPlayer(config.earcons, daemon.playback)

    # The button (GPIO or keyboard) unless gestures come from elsewhere.
    if daemon._external_gestures is None and (config.button.enabled or config.button.keyboard):
        from appliance.controls import ButtonGestures

        controller = daemon.controller

        def wants_double() -> bool:
            return getattr(config.button, controller.mode).double != "none"

        buttons = ButtonGestures(
            config.button, on_gesture=daemon._gesture_queue.put_nowait, wants_double=wants_double
        )
        try:
            buttons.start()
        except Exception as exc:  # no GPIO on this machine: say so, keep running
            log.error("button unavailable (%s); use button.keyboard or the web controls", exc)
            events.publish(ErrorReported(message=f"button unavailable: {exc}", where="button"))
        else:
            closers.append(buttons.close)

    # The agent's state drives the controller's "interrupt" rule.
    def follow_agent(event: Any) -> None:
        if isinstance(event.event, StateChanged):
            daemon.controller.on_agent_speaking(event.event.state == "agent_speaking")

    events.add_callback(follow_agent)

    # Spool and uploader: the safety net under every mode.
    await open_spool(daemon)

    # Tokens: keep one ready for the current mode so a press connects at once.
    # Both sources share one long-lived HTTP client (a client per token costs CPU and a
    # new connection); it is closed after them.
    from appliance.cloud.tokens import SharedHttpClient, token_source_for
    from appliance.connection.tokens import TokenCoordinator

    token_http = SharedHttpClient()
    closers.append(token_http.aclose)
    daemon._stream_tokens = TokenCoordinator(
        token_source_for(
            config,
            "streaming",
            max_session_seconds=config.live.max_session_seconds,
            client=token_http,
        ),
        retry=retry_limits(config),
        auth_retry_seconds=config.reconnect.auth_retry_seconds,
    )
    daemon._agent_tokens = TokenCoordinator(
        token_source_for(
            config,
            "agent",
            max_session_seconds=config.agent.max_conversation_seconds,
            client=token_http,
        ),
        retry=retry_limits(config),
        auth_retry_seconds=config.reconnect.auth_retry_seconds,
    )
    for tokens in (daemon._stream_tokens, daemon._agent_tokens):
        closers.append(tokens.aclose)
    prefetch_for_mode(daemon)

    # The local page, if enabled.
    if config.web.enabled:
        from appliance.web.server import WebServer

        web = WebServer(config.web, events, daemon.status_snapshot, daemon.web_control)
        await web.start()
        closers.append(web.stop)
        daemon.web = web
        log.info("web page on http://%s:%s/", config.web.host, web.port)


def retry_limits(config: Config) -> RetryLimits:
    """The one retry policy every reconnect and token request of the daemon follows."""
    from appliance.protocol.retry import retry_limits as limits

    return limits(config.reconnect.base_seconds, config.reconnect.max_seconds)


async def open_spool(daemon: Daemon) -> None:
    """The spool and its uploader; without a usable spool the daemon runs on and says why."""
    from appliance.spool import Spool, SpoolUnavailable

    config, events = daemon.config, daemon.events
    try:
        daemon.spool = await asyncio.to_thread(Spool, config, events)
    except SpoolUnavailable as exc:
        daemon.spool_problem = str(exc)
        log.error("spool unavailable, running without it (recording is refused): %s", exc)
        events.publish(ErrorReported(message=f"spool unavailable: {exc}", where="spool"))
        events.publish(SpoolStatus(available=False, problem=str(exc)))
        return
    daemon._closers.append(daemon.spool.close)
    if config.upload.enabled and config.api_key is not None:
        from appliance.cloud.rest import RestClient
        from appliance.late import LateTranscripts
        from appliance.spool.uploader import Uploader

        client = RestClient.from_config(config)
        daemon._closers.append(client.aclose)
        daemon.uploader = Uploader(
            daemon.spool,
            client,
            config.upload,
            events,
            on_transcript=LateTranscripts(config.state_path, events),
        )
        daemon._background.append(asyncio.create_task(daemon.uploader.run(), name="uploader"))
    daemon.spool.publish_status()


def _wait_first_audio(source: Any) -> bool:
    from appliance.daemon import FIRST_AUDIO_TIMEOUT

    return source.ring.wait_until(1, timeout=FIRST_AUDIO_TIMEOUT)


def prefetch_for_mode(daemon: Daemon) -> None:
    """Keep a token ready only for the mode in use: a token nobody uses is a wasted mint."""
    mode = daemon.controller.mode
    for kind, tokens in (("live", daemon._stream_tokens), ("agent", daemon._agent_tokens)):
        if tokens is None:
            continue
        if kind == mode:
            tokens.start()
        else:
            daemon._background.append(asyncio.create_task(tokens.aclose()))


def make_session(daemon: Daemon, mode: str) -> SessionRunner:
    """A new session runner for ``mode``."""
    config = daemon.config
    state_dir = config.state_path
    if mode == "live":
        from appliance.live import LiveTranscription

        return LiveTranscription(
            config, daemon.ring, daemon._stream_tokens, daemon.spool, daemon.events, state_dir
        )
    if mode == "agent":
        from appliance.agent import VoiceAgentConversation

        return VoiceAgentConversation(
            config,
            daemon.ring,
            daemon.playback or _SilentSink(),
            daemon._agent_tokens,
            daemon.events,
            state_dir,
            on_notice=daemon.play_earcon,
        )
    if daemon.spool is None:
        from appliance.spool.recorder import Refusal

        return Refusal(daemon.spool_problem or "not opened", daemon.events, daemon.play_earcon)
    from appliance.spool.recorder import Recording

    return Recording(daemon.ring, daemon.spool, events=daemon.events)


class _SilentSink:
    """Playback for a device without a speaker: replies are dropped, never block."""

    def write(self, pcm: bytes) -> None:
        pass

    def flush(self) -> None:
        pass

    @property
    def drained(self) -> bool:
        return True
