"""Building the daemon's parts from the configuration, before the daemon exists.

:func:`build` opens every part in order (the microphone first: READY means it
delivers) into one :class:`Components`, registering how to close each on the
caller's ``AsyncExitStack``, and makes one session factory per mode. The
daemon then only runs the control loop over them. The local page is opened
last by :func:`open_web`, since it shows and drives the daemon.
Heavy modules are imported inside functions, so a mode that is not used
costs no import time or memory (a Pi Zero 2 W has 512 MB).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from appliance.components import Components
from appliance.controller import Controller, Gesture, Phase
from appliance.events import ErrorReported, EventBus, SpoolStatus, StateChanged, idle
from appliance.session import NoticeCallback, Session, SessionFactory

if TYPE_CHECKING:
    from appliance.audio.capture import AudioCapture, Microphone
    from appliance.audio.playback import AudioPlayback
    from appliance.audio.ring import RingBuffer
    from appliance.audio.sources import FileSource
    from appliance.audio.stream import StateCallback, StreamState
    from appliance.cloud.tokens import TokenKind
    from appliance.config import Config
    from appliance.connection.tokens import TokenCoordinator
    from appliance.controls import EarconPlayer
    from appliance.mqtt.bridge import ControlFn as MqttControlFn
    from appliance.mqtt.bridge import MqttBridge
    from appliance.outbox.delivery import Outbox
    from appliance.protocol.retry import RetryLimits
    from appliance.service import ServiceNotifier
    from appliance.spool import Spool
    from appliance.spool.uploader import Uploader
    from appliance.summary.worker import SummaryWorker
    from appliance.web.server import ControlFn, StatusFn, WebServer

log = logging.getLogger("appliance.daemon")

#: How long the microphone may take to deliver its first block before start-up
#: reports it missing (PulseAudio takes ~1.5 s; a USB mic far less).
FIRST_AUDIO_TIMEOUT = 10.0


def open_source(
    config: Config,
    on_state: StateCallback | None = None,
    event_loop: asyncio.AbstractEventLoop | None = None,
) -> AudioCapture | FileSource:
    """The microphone (PortAudio) or a paced WAV, started, feeding a ring buffer.

    A WAV is paced by timers on ``event_loop`` when given (the daemon's: its
    sessions consume the audio there, so a block and its work share a wake-up).
    """
    from appliance.config import capture_block_ms

    audio = config.audio
    source: AudioCapture | FileSource
    if audio.source == "file":
        from appliance.audio.sources import FileSource

        if audio.input_file is None:  # a loaded config never has this; a built one may
            raise ValueError("audio.source 'file' needs audio.input_file")
        source = FileSource(
            audio.input_file,
            history_seconds=audio.history_seconds,
            block_ms=capture_block_ms(config),
            on_state=on_state,
            event_loop=event_loop,
        )
    else:
        from appliance.audio import echo_cancel
        from appliance.audio.capture import AudioCapture

        echo_cancel.select(audio.echo_cancel.source, audio.echo_cancel.sink)
        source = AudioCapture(
            audio.input_device,
            audio.input_rate,
            channel=audio.input_channel,
            channels=audio.input_channels,
            mix_channels=None if audio.input_mix is None else tuple(audio.input_mix),
            sample_format=audio.input_format,
            block_ms=capture_block_ms(config),
            history_seconds=audio.history_seconds,
            on_state=on_state,
        )
    source.start()
    return source


def open_sink(
    config: Config, event_loop: asyncio.AbstractEventLoop | None = None
) -> AudioPlayback | None:
    """The speaker (a persistent PortAudio stream), a WAV file, or nothing.

    A WAV sink is paced on ``event_loop`` when given, like :func:`open_source`.
    """
    audio = config.audio
    if audio.sink == "none":
        return None
    sink: AudioPlayback
    if audio.sink == "file":
        from appliance.audio.sources import FileSink

        sink = FileSink(
            audio.output_file,
            jitter_buffer_ms=audio.jitter_buffer_ms,
            volume=audio.volume,
            event_loop=event_loop,
        )
    else:
        from appliance.audio import echo_cancel
        from appliance.audio.playback import AudioPlayback

        echo_cancel.select(audio.echo_cancel.source, audio.echo_cancel.sink)
        sink = AudioPlayback(
            audio.output_device,
            audio.output_rate,
            jitter_buffer_ms=audio.jitter_buffer_ms,
            block_ms=audio.output_block_ms,
            volume=audio.volume,
        )
    sink.start()
    return sink


async def build(
    config: Config,
    events: EventBus,
    notifier: ServiceNotifier,
    stack: contextlib.AsyncExitStack,
) -> Components:
    """Open every part the daemon needs; each is closed by ``stack`` (in reverse order)."""
    controller = Controller(config.button, config.mode)
    gestures: asyncio.Queue[Gesture] = asyncio.Queue()

    # Audio first: READY means the microphone delivers.
    def on_capture_state(state: StreamState, detail: str) -> None:
        if state.value == "lost":
            missing = StateChanged(state="error", mode=controller.mode, detail="microphone missing")
            events.publish(missing)
            events.publish(ErrorReported(message=f"microphone lost: {detail}", where="capture"))
        elif state.value == "running" and controller.phase is Phase.IDLE and not controller.muted:
            events.publish(idle(controller.mode))

    loop = asyncio.get_running_loop()
    microphone: Microphone = await asyncio.to_thread(open_source, config, on_capture_state, loop)
    _on_close(stack, microphone.stop)
    # The first block lands a block's length after the stream opens (100 ms): the other
    # parts open meanwhile, and the end of the build waits for it (READY means audio).
    first_audio = _first_audio(microphone, loop)
    speaker: AudioPlayback | None = await asyncio.to_thread(open_sink, config, loop)
    if speaker is not None:
        _on_close(stack, speaker.stop)
    if speaker is not None and config.audio.source == config.audio.sink == "pyaudio":
        # The microphone may hear the speaker: its earcons stay out of every session's audio.
        from appliance.audio.own_sound import link_own_sound

        link_own_sound(microphone.ring, speaker, config.audio.echo_tail_ms / 1000)

    # Status, watchdog, LEDs, earcons.
    from appliance.controls import EarconPlayer, StateLed
    from appliance.service import Watchdog, capture_liveness

    _in_background(stack, notifier.follow(events), "status")
    from appliance.retention import HistoryRetention

    _in_background(stack, HistoryRetention.from_config(config).run(), "history-retention")
    watchdog = Watchdog(notifier, capture_liveness(microphone))
    watchdog.start()
    _on_close(stack, watchdog.stop)
    if config.led.kind != "none":
        led = StateLed(config.led)
        led.open()
        _on_close(stack, led.close)
        _in_background(stack, led.follow(events), "led")
    earcons = None
    if speaker is not None and config.earcons.enabled:
        earcons = EarconPlayer(config.earcons, speaker)
    # The microphone's level for the page's meter (and MQTT), measured off the capture thread.
    from appliance.audio.meter import publish_levels

    _in_background(
        stack, publish_levels(microphone, events, config.audio.level_interval_seconds), "level"
    )

    # The volume and mute a person set, kept in the state directory.
    from appliance.controls.person import PersonControls

    person = PersonControls(config, microphone.ring, speaker, events, _earcon_player(earcons))
    person.start()
    controller.muted = person.muted
    mute_switch = None
    if config.mute.switch:
        from appliance.controls.mute import MuteSwitch

        mute_switch = MuteSwitch(config.mute)
        _on_close(stack, mute_switch.close)

    # The button (GPIO or keyboard).
    if config.button.enabled or config.button.keyboard:
        from appliance.controls import ButtonGestures

        per_mode = {
            "live": config.button.live,
            "agent": config.button.agent,
            "record": config.button.record,
        }

        def wants_double() -> bool:
            return per_mode[controller.mode].double != "none"

        buttons = ButtonGestures(
            config.button, on_gesture=gestures.put_nowait, wants_double=wants_double
        )
        try:
            buttons.start()
        except Exception as exc:  # no GPIO on this machine: say so, keep running
            log.error("button unavailable (%s); use button.keyboard or the web controls", exc)
            events.publish(ErrorReported(message=f"button unavailable: {exc}", where="button"))
        else:
            _on_close(stack, buttons.close)

    # Spool and uploader: the safety net under every mode.
    spool, spool_problem, uploader = await open_spool(config, events, stack)
    outbox = open_outbox(config, events, spool, uploader, stack)
    summaries = open_summaries(config, events, spool, uploader, stack)

    # Tokens: one coordinator per streamed product, sharing one long-lived HTTP client
    # (a client per token costs CPU and a new connection); it is closed after them.
    from appliance.cloud.tokens import CheckIn, SharedHttpClient, token_source_for
    from appliance.connection.tokens import TokenCoordinator

    token_http = SharedHttpClient()
    _on_close(stack, token_http.aclose)
    checkin = CheckIn()  # what a token broker hears of this device: version, backlog, errors
    events.add_callback(checkin.observe, (SpoolStatus, ErrorReported))
    tokens: dict[str, TokenCoordinator] = {}
    products: tuple[tuple[str, TokenKind, float], ...] = (
        ("live", "streaming", config.live.max_session_seconds),
        ("agent", "agent", config.agent.max_conversation_seconds),
    )
    for mode, kind, longest in products:
        source = token_source_for(
            config, kind, max_session_seconds=longest, client=token_http, checkin=checkin
        )
        tokens[mode] = TokenCoordinator(
            source,
            retry=retry_limits(config),
            auth_retry_seconds=config.reconnect.auth_retry_seconds,
        )
        _on_close(stack, tokens[mode].aclose)

    try:
        await asyncio.wait_for(first_audio, FIRST_AUDIO_TIMEOUT)
    except TimeoutError:
        raise RuntimeError("the microphone delivered no audio") from None
    return Components(
        config=config,
        events=events,
        notifier=notifier,
        controller=controller,
        microphone=microphone,
        speaker=speaker,
        earcons=earcons,
        spool=spool,
        spool_problem=spool_problem,
        uploader=uploader,
        gestures=gestures,
        tokens=tokens,
        sessions=session_factories(
            config, events, microphone.ring, speaker, spool, spool_problem, tokens
        ),
        person=person,
        mute_switch=mute_switch,
        outbox=outbox,
        summaries=summaries,
    )


async def open_web(
    config: Config,
    events: EventBus,
    status: StatusFn,
    control: ControlFn,
    stack: contextlib.AsyncExitStack,
) -> WebServer | None:
    """The local page, if enabled, showing ``status`` and driving ``control``, and the
    history of past sessions and recordings (``web.history_enabled``)."""
    if not config.web.enabled:
        return None
    from appliance.history.archive import Archive
    from appliance.web.history import HistoryApi
    from appliance.web.server import WebServer

    history = HistoryApi(
        Archive.from_config(config),
        list_limit=config.web.history_list_limit,
        audio_max_bytes=config.web.history_audio_max_bytes,
    )
    web = WebServer(config.web, events, status, control, history=history)
    await web.start()
    _on_close(stack, web.stop)
    log.info("web page on http://%s:%s/", config.web.host, web.port)
    return web


async def open_mqtt(
    config: Config,
    events: EventBus,
    control: MqttControlFn,
    microphone: Microphone,
    stack: contextlib.AsyncExitStack,
) -> MqttBridge | None:
    """The MQTT component, if enabled, driving ``control``; disabled, it removes what an
    earlier run published to Home Assistant (in the background, never delaying start-up)."""
    from appliance.mqtt.discovery import DISCOVERY_MARKER
    from appliance.mqtt.identity import device_id

    settings = config.mqtt
    if not settings.enabled and not (config.state_path / DISCOVERY_MARKER).exists():
        return None
    try:
        from appliance.mqtt import bridge
    except ImportError as exc:  # aiomqtt is the mqtt extra
        extra = "pip install 'appliance[mqtt]'"
        raise RuntimeError(f"mqtt needs the mqtt extra ({extra}): {exc}") from exc
    ident = await asyncio.to_thread(device_id, config.state_path)
    if not settings.enabled:
        removal = bridge.remove_discovery(
            settings, device_id=ident, state_dir=config.state_path, password=config.mqtt_password
        )
        _in_background(stack, _logged(removal, "removing MQTT discovery"), "mqtt-removal")
        return None
    from appliance import __version__

    mqtt = bridge.MqttBridge(
        settings,
        events,
        device_id=ident,
        state_dir=config.state_path,
        version=__version__,
        retry=retry_limits(config),
        password=config.mqtt_password,
        control=control,
    )
    _in_background(stack, mqtt.run(), "mqtt")
    return mqtt


async def _logged(work: Coroutine[Any, Any, object], what: str) -> None:
    try:
        await work
    except Exception as exc:
        log.warning("%s failed (tried again at the next start): %s", what, exc)


def retry_limits(config: Config) -> RetryLimits:
    """The one retry policy every reconnect and token request of the daemon follows."""
    from appliance.protocol.retry import retry_limits as limits

    return limits(config.reconnect.base_seconds, config.reconnect.max_seconds)


async def open_spool(
    config: Config, events: EventBus, stack: contextlib.AsyncExitStack
) -> tuple[Spool | None, str | None, Uploader | None]:
    """The spool and its uploader; without a usable spool the daemon runs on and says why.

    Returns the spool (or None and the problem) and the uploader (None when uploads
    are off or there is no key).
    """
    from appliance.spool import Spool, SpoolUnavailable

    try:
        spool = await asyncio.to_thread(Spool, config, events)
    except SpoolUnavailable as exc:
        log.error("spool unavailable, running without it (recording is refused): %s", exc)
        events.publish(ErrorReported(message=f"spool unavailable: {exc}", where="spool"))
        events.publish(SpoolStatus(available=False, problem=str(exc)))
        return None, str(exc), None
    _on_close(stack, spool.close)
    uploader = None
    # Without the key, a token broker's pre-recorded proxy uploads (RestClient.from_config).
    if config.upload.enabled and (config.api_key or config.broker_credential) is not None:
        from appliance.cloud.rest import RestClient
        from appliance.late import LateTranscripts
        from appliance.spool.uploader import Uploader

        client = RestClient.from_config(config)
        _on_close(stack, client.aclose)
        uploader = Uploader(
            spool,
            client,
            config.upload,
            events,
            on_transcript=LateTranscripts(config.state_path, events),
        )
        _in_background(stack, uploader.run(), "uploader")
    spool.publish_status()
    return spool, None, uploader


def open_summaries(
    config: Config,
    events: EventBus,
    spool: Spool | None,
    uploader: Uploader | None,
    stack: contextlib.AsyncExitStack,
) -> SummaryWorker | None:
    """The summary worker, when enabled: its queue lives in the spool database, and the
    LLM Gateway takes the API key itself, so no spool or no key, no summaries (said once)."""
    if not config.summary.enabled:
        return None
    if spool is None:
        log.error("summaries enabled but the spool is unavailable: no summary is made")
        return None
    if config.api_key is None:
        log.warning(
            "summaries need the API key on the device: the LLM Gateway takes the key itself "
            "(there are no temporary tokens for it) and the token broker does not forward it; "
            "no summary is made"
        )
        return None
    from appliance.cloud.gateway import GatewayClient
    from appliance.summary.jobs import SummaryJobs
    from appliance.summary.stored import SummaryPaths
    from appliance.summary.worker import SummaryWorker

    jobs = SummaryJobs(spool.store.path)
    _on_close(stack, jobs.close)
    client = GatewayClient.for_summaries(config)
    _on_close(stack, client.aclose)
    paths = SummaryPaths(config.state_path, spool.root)
    worker = SummaryWorker(jobs, client, config.summary, paths, events, recordings=spool.store)
    if uploader is not None:
        uploader.on_transcript = worker.queue_after(uploader.on_transcript)
    _in_background(stack, worker.run(), "summaries")
    return worker


def open_outbox(
    config: Config,
    events: EventBus,
    spool: Spool | None,
    uploader: Uploader | None,
    stack: contextlib.AsyncExitStack,
) -> Outbox | None:
    """The outbox, when enabled: its queue lives in the spool database, so no spool, no outbox.

    It hears of a finished recording from the uploader (before the row says completed)
    and of a finished live session from the event bus; it closes before the spool does.
    """
    if not config.outbox.enabled:
        return None
    if spool is None:
        log.error("outbox enabled but the spool is unavailable: no transcript is delivered")
        events.publish(ErrorReported(message="outbox off: no spool", where="upload"))
        return None
    from appliance.outbox.delivery import Outbox
    from appliance.outbox.destinations import destination_for

    destination = destination_for(config.outbox, config.outbox_auth)
    outbox = Outbox(spool, config, destination, events)
    if uploader is not None:
        uploader.on_transcript = _each(uploader.on_transcript, outbox.recording_done)
    events.add_callback(outbox.follow, Outbox.FOLLOWS)
    _on_close(stack, lambda: events.remove_callback(outbox.follow))
    _in_background(stack, outbox.run(), "outbox")
    return outbox


def _each(*hooks: Callable[[Any, Any], object] | None) -> Callable[[Any, Any], None]:
    """One transcript hook that calls each of ``hooks`` in turn (None ones skipped); one
    that fails keeps none of the others from running, and its error is raised after."""

    def call(row: Any, transcript: Any) -> None:
        failure: Exception | None = None
        for hook in hooks:
            try:
                if hook is not None:
                    hook(row, transcript)
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    return call


def session_factories(
    config: Config,
    events: EventBus,
    ring: RingBuffer,
    speaker: AudioPlayback | None,
    spool: Spool | None,
    spool_problem: str | None,
    tokens: Mapping[str, TokenCoordinator],
) -> dict[str, SessionFactory]:
    """How a press starts a session in each mode."""
    state_dir = config.state_path

    def live(on_notice: NoticeCallback) -> Session:
        from appliance.live import LiveTranscription

        return LiveTranscription.from_config(config, ring, tokens["live"], spool, events, state_dir)

    def agent(on_notice: NoticeCallback) -> Session:
        from appliance.agent import VoiceAgentConversation

        return VoiceAgentConversation(
            config,
            ring,
            speaker or _SilentSink(),
            tokens["agent"],
            events,
            state_dir,
            on_notice=on_notice,
            spool=spool,
        )

    def record(on_notice: NoticeCallback) -> Session:
        from appliance.spool.recorder import Recording, Refusal

        if spool is None:
            return Refusal(spool_problem or "not opened", events, on_notice)
        return Recording(ring, spool, events=events)

    return {"live": live, "agent": agent, "record": record}


def _earcon_player(earcons: EarconPlayer | None) -> Callable[[str], None]:
    """How the person's controls confirm a change: an earcon, never an exception."""

    def play(name: str) -> None:
        if earcons is not None:
            try:
                earcons.play(name)
            except Exception:
                log.exception("earcon %s failed", name)

    return play


def _first_audio(microphone: Microphone, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
    """Done on ``loop`` once the microphone's first block is in its ring (no thread waits)."""
    arrived: asyncio.Future[None] = loop.create_future()

    def resolve() -> None:
        if not arrived.done():
            arrived.set_result(None)

    def landed() -> None:  # on the capture thread
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(resolve)

    cancel = microphone.ring.call_when_written(1, landed)
    arrived.add_done_callback(lambda _: cancel())
    return arrived


def _on_close(stack: contextlib.AsyncExitStack, close: Callable[[], object]) -> None:
    """Close a part with the stack; a part that fails to close is logged, the rest still close."""

    async def closing() -> None:
        try:
            result = close()
            if isinstance(result, Awaitable):
                await result
        except Exception:
            log.exception("error while closing")

    stack.push_async_callback(closing)


def _in_background(
    stack: contextlib.AsyncExitStack, work: Coroutine[Any, Any, None], name: str
) -> None:
    """Run ``work`` as a task until the stack closes (it is cancelled first, then awaited)."""
    task = asyncio.get_running_loop().create_task(work, name=name)

    async def cancelling() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    stack.push_async_callback(cancelling)


class _SilentSink:
    """Playback for a device without a speaker: replies are dropped, never block."""

    def write(self, pcm: bytes) -> None:
        pass

    def flush(self) -> None:
        pass

    @property
    def drained(self) -> bool:
        return True
