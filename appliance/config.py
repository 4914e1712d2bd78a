"""The appliance's configuration: typed sections, validated up front.

The file is YAML. It is looked up from ``--config FILE``, then
``$APPLIANCE_CONFIG``, then ``/etc/appliance/config.yaml``; with none of them
the built-in defaults apply. Every problem found is reported together, each
naming the file, the line, the key path and what is allowed, so a person
fixing a device over SSH fixes everything in one go. Whatever the file holds,
the answer is that list or a loaded configuration, within a second: the file's
size, nesting and value count are bounded (``LoadLimits``), only plain YAML
values are read (``appliance.yamlread``), numbers are finite, and free-form
settings, passed on to the API as JSON, hold JSON values and no aliases.
A section left empty, every setting in it commented out, keeps its defaults.

Secrets never live inline: the API key and the token-broker credential come
from a file, a systemd credential (``$CREDENTIALS_DIRECTORY/<name>``) or, for a
developer's shell, ``$ASSEMBLYAI_API_KEY``. A secret file that others can read
is used, with a warning in ``Config.warnings`` that the daemon logs.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import ipaddress
import math
import os
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin
from urllib.parse import urlsplit, urlunsplit

import yaml

from appliance.audio.own_sound import DEFAULT_ECHO_TAIL_SECONDS
from appliance.modes import MODES
from appliance.protocol.agent import DEFAULT_AGENT_LIMITS, AgentLimits, Echo
from appliance.protocol.gateway import EU_HOST, MODELS, US_HOST, region_refusal
from appliance.protocol.policy import DEFAULT_RECONNECT_LIMITS, ReconnectLimits
from appliance.protocol.retry import retry_limits
from appliance.protocol.streaming import STREAM_RATE, StreamingLimits
from appliance.protocol.tuning import MAX_TURN_SILENCE_MS, Tuning
from appliance.secrets import Secret, loose_permissions, register_secret
from appliance.settings import limits_of, section, setting
from appliance.transcripts.exports import DEFAULT_CAPTION_LIMITS, CaptionLimits
from appliance.yamlread import (
    SHOWN_CHARS,
    STR,
    Refused,
    alias_of,
    check_collection_tag,
    compose,
    is_null,
    scalar_value,
    shown,
    tag_name,
)

DEFAULT_CONFIG_PATH = Path("/etc/appliance/config.yaml")
CONFIG_ENV = "APPLIANCE_CONFIG"
API_KEY_ENV = "ASSEMBLYAI_API_KEY"

# The documented voices of the Voice Agent API (exact ids).
AGENT_VOICES: tuple[str, ...] = (
    "ivy", "james", "tyler", "winter", "sam", "mia", "bella", "david", "jack", "kyle",
    "helen", "martha", "river", "emma", "victor", "eleanor", "sophie", "oliver", "arjun",
    "ethan", "mei", "dmitri", "lukas", "lena", "pierre", "mina", "joon", "ren", "hana",
    "giulia", "luca", "lucia", "mateo", "diego",
)  # fmt: skip

# Documented hosts per region. The agent API documents a single host.
REGION_HOSTS: dict[str, dict[str, str]] = {
    "edge": {
        "streaming": "streaming.assemblyai.com",
        "rest": "api.assemblyai.com",
        "agent": "agents.assemblyai.com",
    },
    "us": {
        "streaming": "streaming.us.assemblyai.com",
        "rest": "api.assemblyai.com",
        "agent": "agents.assemblyai.com",
    },
    "eu": {
        "streaming": "streaming.eu.assemblyai.com",
        "rest": "api.eu.assemblyai.com",
        "agent": "agents.assemblyai.com",
        "llm_gateway": EU_HOST,
    },
}
for _hosts in REGION_HOSTS.values():
    _hosts.setdefault("llm_gateway", US_HOST)  # the US host serves edge and us


@dataclasses.dataclass(frozen=True)
class LoadLimits:
    """Bounds on what the loader reads, so that any file is judged in well under a second.

    A real configuration is a few kB holding a few hundred values; the example
    file is 8 kB. The schema nests 5 levels deep before a free-form setting
    starts, so ``max_depth`` leaves room for ``max_free_form_depth`` inside one.
    """

    max_file_bytes: int = 256 * 1024
    max_values: int = 20_000  # YAML values in the file, each alias counted as what it stands for
    max_depth: int = 32
    max_free_form_depth: int = 10  # nesting inside upload.extra or a tool's parameters
    max_secret_bytes: int = 16 * 1024  # an API key is 32 characters, a broker credential ~2 kB
    max_problems: int = 50  # reported at once; more would only flood the journal


LOAD_LIMITS = LoadLimits()

# Paths the daemon writes below. Relative ones start at the configuration's directory
# and must stay inside it: one that climbs out with ".." breaks as soon as the file moves.
_WRITTEN_PATHS = ("state_dir", "spool.directory", "audio.output_file")

# What a gesture may do: ``toggle`` starts a session or stops the running one;
# ``start_or_interrupt`` starts one or, while the agent speaks, cuts it short;
# ``stop`` ends the running session; ``switch_mode`` moves to the next mode;
# ``volume_up`` / ``volume_down`` step the speaker's volume; ``mute`` mutes or unmutes.
ButtonAction = Literal[
    "none",
    "toggle",
    "start_or_interrupt",
    "stop",
    "switch_mode",
    "end_turn",
    "volume_up",
    "volume_down",
    "mute",
]
BUTTON_ACTIONS: tuple[ButtonAction, ...] = get_args(ButtonAction)

# The other choices of the schema: a setting typed with one takes its values as choices.
Region = Literal["edge", "us", "eu"]
AudioSource = Literal["pyaudio", "file"]
AudioSink = Literal["pyaudio", "file", "none"]
LedKind = Literal["none", "led", "pwm", "rgb", "apa102"]
CaptureFormat = Literal["int16", "int32"]
ToolKind = Literal["http", "command"]
HttpMethod = Literal["GET", "POST"]
MqttQos = Literal[0, 1]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


# --------------------------------------------------------------------------
# The schema


@dataclasses.dataclass
class EndpointsConfig:
    """Where the cloud is. Unset endpoints follow ``region``; ``base_url`` points all at one server
    (the local emulator)."""

    region: str = setting("edge", choices=get_args(Region), doc="documented AssemblyAI hosts")
    base_url: str | None = setting(None, doc="one http(s) URL serving every product (emulator)")
    streaming_url: str | None = setting(None, doc="Universal Streaming v3 WebSocket URL")
    streaming_token_url: str | None = setting(None, doc="streaming temporary-token URL")
    agent_url: str | None = setting(None, doc="Voice Agent WebSocket URL")
    agent_token_url: str | None = setting(None, doc="Voice Agent temporary-token URL")
    rest_url: str | None = setting(None, doc="pre-recorded REST base URL")
    llm_gateway_url: str | None = setting(None, doc="LLM Gateway chat-completions URL (summaries)")
    allow_insecure: bool = setting(
        False, doc="allow ws:// and http:// to hosts other than loopback (never in production)"
    )

    def resolved(self) -> ResolvedEndpoints:
        hosts = REGION_HOSTS[self.region]
        if self.base_url:
            base = self.base_url.rstrip("/")
            ws_base = "ws" + base[4:] if base.startswith("http") else base
            defaults = {
                "streaming_url": f"{ws_base}/v3/ws",
                "streaming_token_url": f"{base}/v3/token",
                "agent_url": f"{ws_base}/v1/ws",
                "agent_token_url": f"{base}/v1/token",
                "rest_url": base,
                "llm_gateway_url": f"{base}/v1/chat/completions",
            }
        else:
            defaults = {
                "streaming_url": f"wss://{hosts['streaming']}/v3/ws",
                "streaming_token_url": f"https://{hosts['streaming']}/v3/token",
                "agent_url": f"wss://{hosts['agent']}/v1/ws",
                "agent_token_url": f"https://{hosts['agent']}/v1/token",
                "rest_url": f"https://{hosts['rest']}",
                "llm_gateway_url": f"https://{hosts['llm_gateway']}/v1/chat/completions",
            }
        chosen = {k: getattr(self, k) or v for k, v in defaults.items()}
        return ResolvedEndpoints(**chosen)


@dataclasses.dataclass(frozen=True)
class ResolvedEndpoints:
    """The concrete URLs the daemon talks to."""

    streaming_url: str
    streaming_token_url: str
    agent_url: str
    agent_token_url: str
    rest_url: str
    llm_gateway_url: str

    @property
    def llm_gateway_in_eu(self) -> bool:
        """Is the gateway the EU host (Claude and Gemini models only)?"""
        return urlsplit(self.llm_gateway_url).hostname == EU_HOST


@dataclasses.dataclass
class TokenBrokerConfig:
    """The owner's own token endpoint, so a fleet never stores the AssemblyAI key."""

    url: str | None = setting(None, doc='https URL answering {"token": ...}; unset = mint locally')
    credential_file: Path | None = setting(None, doc="file holding the device credential")
    credential_name: str = setting("token-broker", doc="systemd credential name of it")


@dataclasses.dataclass
class AuthConfig:
    """Where secrets come from. Inline secrets are refused on purpose."""

    api_key_file: Path | None = setting(None, doc="file holding the AssemblyAI API key")
    api_key_credential: str = setting(
        "assemblyai-api-key", doc="systemd credential name ($CREDENTIALS_DIRECTORY/<name>)"
    )
    token_broker: TokenBrokerConfig = section(TokenBrokerConfig)


@dataclasses.dataclass
class EchoCancelConfig:
    """The sound server's echo-cancelled microphone and speaker (module-echo-cancel).

    Named, they are what the daemon records from and plays into (libpulse's
    PULSE_SOURCE / PULSE_SINK, on PulseAudio and on PipeWire's pulse server),
    and ``appliance check`` reports whether the server has them.
    """

    source: str | None = setting(None, doc="echo-cancelled source name; null = not used")
    sink: str | None = setting(None, doc="its sink (the canceller's far-end reference)")


@dataclasses.dataclass
class AudioConfig:
    """Microphone and speaker."""

    source: AudioSource = setting(
        "pyaudio", choices=get_args(AudioSource), doc="microphone or a paced WAV"
    )
    input_file: Path | None = setting(None, doc="WAV played in real time when source is file")
    input_device: str | None = setting(None, doc="substring of the input device name; null=default")
    input_rate: int | None = setting(
        None, minimum=8000, maximum=192000, doc="capture rate; null = a rate the device supports"
    )
    input_channel: int = setting(0, minimum=0, maximum=31, doc="channel of a multi-channel mic")
    input_channels: int | None = setting(
        None, minimum=1, maximum=32, doc="channels opened; null = enough for those used"
    )
    input_mix: list[int] | None = setting(
        None, doc="channels averaged instead of input_channel, e.g. [0, 1]; [] = all opened"
    )
    input_format: CaptureFormat = setting(
        "int16", choices=get_args(CaptureFormat), doc="int32 = S32_LE (mic HATs); ring stays int16"
    )
    block_ms: int | None = setting(
        None,
        minimum=5,
        maximum=200,
        unit=" ms",
        doc="capture callback period (CPU vs latency); null = 200 live/record, 100 agent",
    )
    history_seconds: float = setting(
        10.0, minimum=2, maximum=600, unit=" s", doc="ring buffer history (reconnect gap cover)"
    )
    preroll_seconds: float = setting(
        0.5, minimum=0, maximum=5, unit=" s", doc="audio kept from before the button press"
    )
    sink: AudioSink = setting("pyaudio", choices=get_args(AudioSink), doc="speaker output")
    output_file: Path | None = setting(None, doc="WAV receiving playback when sink is file")
    output_device: str | None = setting(None, doc="substring of the output device name")
    output_rate: int | None = setting(None, minimum=8000, maximum=192000, doc="null = 24000")
    output_block_ms: int = setting(
        20, minimum=5, maximum=100, unit=" ms", doc="speaker callback period (latency vs CPU)"
    )
    jitter_buffer_ms: int = setting(60, minimum=0, maximum=1000, unit=" ms")
    volume: float = setting(1.0, minimum=0, maximum=2, doc="playback gain")
    echo_tail_ms: int = setting(
        round(DEFAULT_ECHO_TAIL_SECONDS * 1000),
        minimum=0,
        maximum=2000,
        unit=" ms",
        doc="own sounds stay out of the mic this long past the output latency",
    )
    level_interval_seconds: float = setting(
        0.25, minimum=0.05, maximum=60, unit=" s", doc="microphone level event at most this often"
    )
    echo_cancel: EchoCancelConfig = section(EchoCancelConfig)


@dataclasses.dataclass
class ButtonActionsConfig:
    """What a short, long and double press do."""

    short: ButtonAction = setting("toggle", choices=BUTTON_ACTIONS)
    long: ButtonAction = setting("switch_mode", choices=BUTTON_ACTIONS)
    double: ButtonAction = setting("none", choices=BUTTON_ACTIONS)


def _actions(short: ButtonAction, long: ButtonAction, double: ButtonAction) -> Any:
    return dataclasses.field(default_factory=lambda: ButtonActionsConfig(short, long, double))


@dataclasses.dataclass
class ButtonConfig:
    """The one button (gpiozero). Pin numbers are BCM."""

    enabled: bool = setting(True, doc="use a GPIO button")
    pin: int = setting(17, minimum=0, maximum=53)
    pull_up: bool = setting(True, doc="button wired to ground")
    bounce_ms: int = setting(30, minimum=0, maximum=500, unit=" ms")
    long_press_seconds: float = setting(1.0, minimum=0.2, maximum=10, unit=" s")
    double_press_seconds: float = setting(0.4, minimum=0, maximum=2, unit=" s")
    hold_to_talk: bool = setting(False, doc="live/record: talk while held instead of toggling")
    keyboard: bool = setting(False, doc="Enter on stdin acts as the button (desktop)")
    live: ButtonActionsConfig = _actions("toggle", "switch_mode", "none")
    agent: ButtonActionsConfig = _actions("start_or_interrupt", "stop", "switch_mode")
    record: ButtonActionsConfig = _actions("toggle", "switch_mode", "none")


@dataclasses.dataclass
class LedConfig:
    """State LED: a plain LED, a PWM LED, an RGB LED or an APA102 ring (mic HATs, SPI)."""

    kind: LedKind = setting("none", choices=get_args(LedKind))
    pins: list[int] = setting([], doc="one pin, or red/green/blue pins for rgb")
    active_high: bool = setting(True)
    spi_bus: int = setting(0, minimum=0, maximum=6, doc="apa102: /dev/spidev<bus>.<device>")
    spi_device: int = setting(1, minimum=0, maximum=3, doc="apa102: 1 on ReSpeaker HATs")
    spi_speed_hz: int = setting(8_000_000, minimum=10_000, maximum=32_000_000, unit=" Hz")
    count: int = setting(3, minimum=1, maximum=255, doc="apa102: LEDs (2-mic 3, 4-mic 12)")
    brightness: float = setting(0.25, minimum=0, maximum=1, doc="apa102: global brightness")
    frame_rate: int = setting(
        30, minimum=5, maximum=100, unit=" Hz", doc="apa102: ring updates a second while fading"
    )


@dataclasses.dataclass
class EarconsConfig:
    """Short sounds through the speaker."""

    enabled: bool = setting(True)
    volume: float = setting(0.3, minimum=0, maximum=1)
    start: bool = setting(True)
    stop: bool = setting(True)
    error: bool = setting(True)
    saved: bool = setting(True, doc="audio was kept offline for later")


@dataclasses.dataclass
class VolumeConfig:
    """The speaker's volume at run time, in percent (kept in the state directory).

    The daemon's own gain: ``audio.volume`` times (percent / 100) squared, so
    each step sounds about as much louder as the one before.
    """

    initial_percent: int = setting(70, minimum=0, maximum=100, unit=" %", doc="until first set")
    step_percent: int = setting(10, minimum=1, maximum=50, unit=" %", doc="one gesture's step")
    minimum_percent: int = setting(
        10, minimum=0, maximum=100, unit=" %", doc="lowest a step goes (0 = silent)"
    )
    maximum_percent: int = setting(100, minimum=1, maximum=100, unit=" %")


@dataclasses.dataclass
class MuteConfig:
    """The microphone's mute: a GPIO switch (closed = muted), a gesture or the page."""

    switch: bool = setting(False, doc="use a GPIO mute switch")
    pin: int = setting(27, minimum=0, maximum=53)
    pull_up: bool = setting(True, doc="switch wired to ground")
    bounce_ms: int = setting(30, minimum=0, maximum=500, unit=" ms")


@dataclasses.dataclass
class ReconnectConfig:
    """Backoff for every reconnect: full jitter, never hammering the API."""

    base_seconds: float = setting(
        DEFAULT_RECONNECT_LIMITS.retry.base_seconds, minimum=0.05, maximum=60, unit=" s"
    )
    max_seconds: float = setting(
        DEFAULT_RECONNECT_LIMITS.retry.cap_seconds, minimum=1, maximum=3600, unit=" s"
    )
    auth_retry_seconds: float = setting(
        DEFAULT_RECONNECT_LIMITS.slow_retry_seconds,
        minimum=10,
        maximum=86400,
        unit=" s",
        doc="slow retry after repeated auth failures",
    )


@dataclasses.dataclass
class LiveConfig:
    """Live transcription over Universal Streaming v3."""

    speech_model: str = setting("u3-rt-pro", doc="streaming speech model")
    chunk_ms: int = setting(
        StreamingLimits.chunk_ms, minimum=50, maximum=1000, unit=" ms", doc="audio per frame"
    )
    format_turns: bool = setting(True)
    keyterms_prompt: list[str] = setting([], doc="up to 100 terms, each up to 50 characters")
    prompt: str | None = setting(None, doc="u3-rt-pro only, e.g. 'Transcribe Spanish'")
    domain: str | None = setting(None, doc="e.g. medical-v1")
    speaker_labels: bool = setting(False, doc="each turn says who spoke (A, B, ...)")
    min_turn_silence: int | None = setting(None, minimum=0, maximum=MAX_TURN_SILENCE_MS, unit=" ms")
    max_turn_silence: int | None = setting(None, minimum=0, maximum=MAX_TURN_SILENCE_MS, unit=" ms")
    end_of_turn_confidence_threshold: float | None = setting(
        None, minimum=0, maximum=1, doc="not u3-rt-pro (it ignores it)"
    )
    inactivity_timeout: int | None = setting(None, minimum=5, maximum=3600, unit=" s")
    max_session_seconds: float = setting(3600.0, minimum=10, maximum=10800, unit=" s")
    silence_timeout_seconds: float | None = setting(
        None, minimum=1, maximum=3600, unit=" s", doc="stop after this long without a word"
    )
    token_expires_seconds: int = setting(600, minimum=1, maximum=600, unit=" s")
    termination_timeout_seconds: float = setting(
        StreamingLimits.termination_timeout_seconds, minimum=0.5, maximum=60, unit=" s"
    )


@dataclasses.dataclass
class TurnDetectionConfig:
    """Server-side turn detection of the voice agent."""

    vad_threshold: float | None = setting(None, minimum=0, maximum=1)
    min_silence: int | None = setting(None, minimum=0, maximum=10000, unit=" ms")
    max_silence: int | None = setting(None, minimum=0, maximum=30000, unit=" ms")
    interrupt_response: bool | None = setting(None)


@dataclasses.dataclass
class ToolConfig:
    """A local action the agent may call: an HTTP request or a command."""

    name: str = setting(doc="tool name the model sees")
    description: str = setting("", doc="what it does, for the model")
    parameters: dict[str, Any] = setting({}, doc="JSON schema of the arguments (flat)")
    kind: ToolKind = setting("http", choices=get_args(ToolKind))
    url: str | None = setting(None, doc="http: URL receiving the arguments as JSON")
    method: HttpMethod = setting("POST", choices=get_args(HttpMethod))
    command: list[str] = setting([], doc="command: argv; arguments arrive as JSON on stdin")
    timeout_seconds: float = setting(10.0, minimum=0.1, maximum=120, unit=" s")
    max_output_bytes: int = setting(16384, minimum=64, maximum=1048576)


@dataclasses.dataclass
class AgentConfig:
    """Voice agent over the Voice Agent API."""

    system_prompt: str = setting("You are a helpful, concise voice assistant.")
    greeting: str | None = setting("Hi! How can I help?")
    voice: str = setting("ivy", choices=AGENT_VOICES)
    volume: int | None = setting(None, minimum=0, maximum=100, doc="agent output volume")
    keyterms: list[str] = setting([])
    turn_detection: TurnDetectionConfig = section(TurnDetectionConfig)
    echo: Echo = setting("half_duplex", choices=get_args(Echo))
    chunk_ms: int = setting(
        100, minimum=20, maximum=500, unit=" ms", doc="microphone audio per input.audio"
    )
    tools: list[ToolConfig] = setting([])
    max_conversation_seconds: float = setting(
        DEFAULT_AGENT_LIMITS.max_conversation_seconds, minimum=10, maximum=10800, unit=" s"
    )
    idle_timeout_seconds: float = setting(
        DEFAULT_AGENT_LIMITS.idle_timeout_seconds, minimum=5, maximum=3600, unit=" s"
    )
    resume_window_seconds: float = setting(
        DEFAULT_AGENT_LIMITS.resume_window_seconds, minimum=0, maximum=30, unit=" s"
    )
    token_expires_seconds: int = setting(600, minimum=1, maximum=600, unit=" s")


def capture_block_ms(config: Config) -> int:
    """The capture block ``config`` asks for: ``audio.block_ms``, else its mode's."""
    if config.audio.block_ms is not None:
        return config.audio.block_ms
    return CAPTURE_BLOCK_MS_BY_MODE[config.mode]


def streaming_limits(
    live: LiveConfig, rc: ReconnectConfig, history_seconds: float
) -> StreamingLimits:
    """A live session's limits from the ``live`` and ``reconnect`` settings and the audio
    ring's history (the streaming core's own defaults for everything else)."""
    history = int(history_seconds * STREAM_RATE)
    return StreamingLimits(
        chunk_ms=live.chunk_ms,
        backoff_base_seconds=rc.base_seconds,
        backoff_max_seconds=rc.max_seconds,
        auth_retry_seconds=rc.auth_retry_seconds,
        termination_timeout_seconds=live.termination_timeout_seconds,
        history_samples=history,
        # Keep unconfirmed audio while at least a quarter of the history is left.
        history_margin_samples=min(2 * STREAM_RATE, history // 4),
    )


def live_tuning(live: LiveConfig) -> Tuning:
    """What a live session starts with of what it can retune mid-session."""
    return Tuning(
        keyterms_prompt=tuple(live.keyterms_prompt),
        min_turn_silence=live.min_turn_silence,
        max_turn_silence=live.max_turn_silence,
    )


#: The streaming model the reference documents ``prompt`` for ("Multilingual streaming:
#: Universal-3 Pro Streaming + prompt") and that silently ignores
#: ``end_of_turn_confidence_threshold`` (agent instructions, sections 3, 11 and 14).
U3_PRO_STREAMING = "u3-rt-pro"


def live_model_problems(live: LiveConfig) -> list[tuple[str, str]]:
    """(setting, why) for each live setting the chosen speech model ignores or lacks.

    Only what the reference says: ``prompt`` is documented with Universal-3 Pro
    Streaming alone; that model silently ignores the end-of-turn confidence
    threshold. ``speaker_labels``, ``keyterms_prompt`` and the turn silences
    carry no model restriction there.
    """
    out: list[tuple[str, str]] = []
    if live.prompt is not None and live.speech_model != U3_PRO_STREAMING:
        out.append(
            (
                "live.prompt",
                f"prompt is documented for speech_model {U3_PRO_STREAMING!r} only, "
                f"not {live.speech_model!r}",
            )
        )
    if live.end_of_turn_confidence_threshold is not None and (
        live.speech_model == U3_PRO_STREAMING
    ):
        out.append(
            (
                "live.end_of_turn_confidence_threshold",
                f"speech_model {U3_PRO_STREAMING!r} silently ignores it: tune "
                "min_turn_silence/max_turn_silence instead",
            )
        )
    return out


def reconnect_limits(rc: ReconnectConfig) -> ReconnectLimits:
    """The reconnect policy's limits from the ``reconnect`` settings (its defaults otherwise)."""
    return dataclasses.replace(
        DEFAULT_RECONNECT_LIMITS,
        retry=retry_limits(rc.base_seconds, rc.max_seconds),
        slow_retry_seconds=rc.auth_retry_seconds,
    )


def agent_limits(agent: AgentConfig) -> AgentLimits:
    """A conversation's limits from the ``agent`` settings (the core's defaults for the rest)."""
    return dataclasses.replace(
        DEFAULT_AGENT_LIMITS,
        resume_window_seconds=agent.resume_window_seconds,
        idle_timeout_seconds=agent.idle_timeout_seconds,
        max_conversation_seconds=agent.max_conversation_seconds,
    )


@dataclasses.dataclass
class SpoolConfig:
    """Durable store of audio waiting for upload."""

    directory: Path | None = setting(None, doc="null = <state_dir>/spool")
    quota_bytes: int = setting(2_000_000_000, minimum=1_000_000, doc="most audio kept on disk")
    min_free_bytes: int = setting(200_000_000, minimum=0, doc="free space always left on disk")
    segment_seconds: float = setting(60.0, minimum=1, maximum=3600, unit=" s")
    sync_interval_seconds: float = setting(1.0, minimum=0.1, maximum=1.0, unit=" s")
    retention_days: float = setting(7.0, minimum=0, maximum=3650, doc="keep audio after transcript")


@dataclasses.dataclass
class HistoryConfig:
    """What is kept of past sessions: transcripts/ and conversations/ files, done recordings."""

    retention_days: float | None = setting(
        90.0, minimum=1, maximum=3650, doc="delete older ones; null = no age limit"
    )
    max_bytes: int | None = setting(
        200_000_000, minimum=1_000_000, doc="oldest files go first past this; null = no cap"
    )
    check_interval_seconds: float = setting(3600.0, minimum=60, maximum=86400, unit=" s")


#: The summary prompt unless one is configured (the system message of the request).
DEFAULT_SUMMARY_PROMPT = (
    "You are given the transcript of a recording or a meeting. Write a short summary of "
    "what was said (at most five bullet points), then a list headed 'Action items' with "
    "each task, decision to follow up or open question and who owns it, if anyone is "
    "named. If there are none, write 'Action items: none'. Use only what the transcript says."
)


@dataclasses.dataclass
class SummaryConfig:
    """A summary and action items of each live session and field recording (LLM Gateway).

    Needs the API key on the device: the gateway takes the key itself (no temporary
    tokens), and the token broker does not forward it.
    """

    enabled: bool = setting(False)
    model: str = setting(
        "claude-haiku-4-5-20251001", choices=MODELS, doc="exact, versioned LLM Gateway model id"
    )
    prompt: str = setting(DEFAULT_SUMMARY_PROMPT, doc="instructions sent with the transcript")
    max_tokens: int = setting(1000, minimum=1, maximum=32_000, doc="longest answer asked for")
    max_attempts: int = setting(20, minimum=1, maximum=1000, doc="failed attempts, then failed")
    timeout_seconds: float = setting(
        120.0, minimum=5, maximum=600, unit=" s", doc="for the gateway's answer"
    )


@dataclasses.dataclass
class UploadConfig:
    """Pre-recorded transcription of spooled audio."""

    enabled: bool = setting(True)
    speech_models: list[str] = setting(["universal-3-pro", "universal-2"])
    speaker_labels: bool = setting(False)
    language_detection: bool = setting(False)
    language_code: str | None = setting(None)
    keyterms_prompt: list[str] = setting([])
    redact_pii: bool = setting(False)
    redact_pii_policies: list[str] = setting([])
    extra: dict[str, Any] = setting({}, doc="further /v2/transcript options, passed as given")
    concurrency: int = setting(1, minimum=1, maximum=4)
    poll_seconds: float = setting(3.0, minimum=0.1, maximum=60, unit=" s")
    write_timeout_seconds: float = setting(120.0, minimum=5, maximum=3600, unit=" s")
    max_attempts: int = setting(20, minimum=1, maximum=1000)


@dataclasses.dataclass
class OutboxConfig:
    """Delivery of each finished transcript off the device: POSTed to a URL or given to a
    command. Nothing is sent while it is disabled."""

    enabled: bool = setting(False)
    url: str | None = setting(None, doc="receives each transcript as JSON (POST); or command")
    allow_insecure: bool = setting(False, doc="allow a plain http:// url to a non-loopback host")
    auth_header: str = setting("Authorization", doc="header the credential is sent in")
    auth_file: Path | None = setting(
        None, doc="file (mode 0600) holding that header's value, e.g. 'Bearer ...'"
    )
    command: list[str] = setting([], doc="argv (no shell) given each transcript as JSON on stdin")
    timeout_seconds: float = setting(30.0, minimum=1, maximum=600, unit=" s", doc="per attempt")
    retry_floor_seconds: float = setting(
        5.0, minimum=0.1, maximum=3600, unit=" s", doc="no retry sooner than this after a failure"
    )
    retry_base_seconds: float = setting(10.0, minimum=0.1, maximum=3600, unit=" s")
    retry_cap_seconds: float = setting(3600.0, minimum=1, maximum=86400, unit=" s")
    max_attempts: int | None = setting(
        None, minimum=1, maximum=100_000, doc="then failed; null = retried until delivered"
    )
    summary_wait_seconds: float = setting(
        120.0, minimum=0, maximum=86400, unit=" s", doc="wait this long for a summary to be stored"
    )


@dataclasses.dataclass
class WebConfig:
    """Local captions and status page."""

    enabled: bool = setting(False)
    host: str = setting("127.0.0.1")
    port: int = setting(8080, minimum=1, maximum=65535)
    controls_enabled: bool = setting(False)
    control_token_file: Path | None = setting(None)
    history_enabled: bool = setting(
        True, doc="the /history page (past transcripts; needs the control token)"
    )
    history_list_limit: int = setting(
        500, minimum=1, maximum=100_000, doc="newest sessions and recordings it lists"
    )
    history_audio_max_bytes: int = setting(
        256_000_000, minimum=0, maximum=4_000_000_000, unit=" B", doc="larger: no playback"
    )


@dataclasses.dataclass
class ExportsConfig:
    """Subtitles made on the device (live sessions; a recording's come from the API)."""

    caption_line_chars: int = setting(
        DEFAULT_CAPTION_LIMITS.line_chars, minimum=10, maximum=200, doc="characters per line"
    )
    caption_lines: int = setting(DEFAULT_CAPTION_LIMITS.lines, minimum=1, maximum=4)
    caption_max_seconds: float = setting(
        DEFAULT_CAPTION_LIMITS.max_cue_ms / 1000, minimum=0.5, maximum=60, unit=" s"
    )


def caption_limits(exports: ExportsConfig) -> CaptionLimits:
    """The subtitle cutter's limits from the ``exports`` settings."""
    return CaptionLimits(
        line_chars=exports.caption_line_chars,
        lines=exports.caption_lines,
        max_cue_ms=round(exports.caption_max_seconds * 1000),
    )


@dataclasses.dataclass
class MqttConfig:
    """MQTT broker (Home Assistant, Node-RED, a fleet dashboard). The password is never inline."""

    enabled: bool = setting(False)
    host: str = setting("localhost", doc="the broker's host name or address")
    port: int | None = setting(None, minimum=1, maximum=65535, doc="null = 1883, or 8883 with tls")
    tls: bool = setting(False, doc="TLS to the broker, verified against ca_file")
    ca_file: Path | None = setting(None, doc="CA certificate(s) in PEM; null = the system's")
    client_cert_file: Path | None = setting(None, doc="client certificate (PEM), if asked for")
    client_key_file: Path | None = setting(None, doc="its private key (null: in the cert file)")
    username: str | None = setting(None)
    password_file: Path | None = setting(None, doc="file holding the broker password")
    password_credential: str = setting("mqtt-password", doc="systemd credential name of it")
    client_id: str | None = setting(None, doc="null = appliance-<device id>")
    base_topic: str | None = setting(None, doc="null = appliance/<device id>")
    qos: MqttQos = setting(
        1, choices=get_args(MqttQos), doc="for events and commands (state is retained)"
    )
    keepalive_seconds: int = setting(60, minimum=5, maximum=3600, unit=" s")
    discovery: bool = setting(True, doc="publish Home Assistant discovery")
    discovery_prefix: str = setting("homeassistant")
    partials: bool = setting(False, doc="also publish partial turns (rate-limited)")
    partial_interval_seconds: float = setting(1.0, minimum=0.1, maximum=60, unit=" s")
    level_interval_seconds: float = setting(
        10.0, minimum=1, maximum=3600, unit=" s", doc="microphone level at most this often"
    )
    outbox_messages: int = setting(
        1000, minimum=10, maximum=100_000, doc="waiting while the broker is away (oldest dropped)"
    )
    auth_retry_seconds: float = setting(
        60.0, minimum=5, maximum=86400, unit=" s", doc="retry after the broker refused the login"
    )


@dataclasses.dataclass
class LoggingConfig:
    """Log output."""

    level: LogLevel = setting("INFO", choices=get_args(LogLevel))


#: The capture block when ``audio.block_ms`` is null, by the mode the daemon starts in.
#: A wake-up of the capture threads costs far more than the work it brings, so live
#: transcription and recording take one block per 200 ms live frame: the frame's last
#: sample leaves no later than with 100 ms blocks. The voice agent keeps 100 ms blocks,
#: so the server hears each 100 ms of speech (a barge-in) without waiting for the next.
CAPTURE_BLOCK_MS_BY_MODE: dict[str, int] = {"live": 200, "record": 200, "agent": 100}


@dataclasses.dataclass
class Config:
    """The whole appliance configuration."""

    mode: str = setting("live", choices=MODES, doc="what a button press starts")
    state_dir: Path | None = setting(None, doc="null = $STATE_DIRECTORY or /var/lib/appliance")
    endpoints: EndpointsConfig = section(EndpointsConfig)
    auth: AuthConfig = section(AuthConfig)
    audio: AudioConfig = section(AudioConfig)
    button: ButtonConfig = section(ButtonConfig)
    led: LedConfig = section(LedConfig)
    earcons: EarconsConfig = section(EarconsConfig)
    volume: VolumeConfig = section(VolumeConfig)
    mute: MuteConfig = section(MuteConfig)
    reconnect: ReconnectConfig = section(ReconnectConfig)
    live: LiveConfig = section(LiveConfig)
    agent: AgentConfig = section(AgentConfig)
    spool: SpoolConfig = section(SpoolConfig)
    history: HistoryConfig = section(HistoryConfig)
    upload: UploadConfig = section(UploadConfig)
    outbox: OutboxConfig = section(OutboxConfig)
    web: WebConfig = section(WebConfig)
    exports: ExportsConfig = section(ExportsConfig)
    mqtt: MqttConfig = section(MqttConfig)
    logging: LoggingConfig = section(LoggingConfig)
    summary: SummaryConfig = section(SummaryConfig)

    # Filled by the loader, not by YAML.
    source: str = dataclasses.field(default="<defaults>", metadata={"internal": True})
    api_key: Secret | None = dataclasses.field(default=None, metadata={"internal": True})
    broker_credential: Secret | None = dataclasses.field(default=None, metadata={"internal": True})
    mqtt_password: Secret | None = dataclasses.field(default=None, metadata={"internal": True})
    # The value of outbox.auth_header, read from outbox.auth_file.
    outbox_auth: Secret | None = dataclasses.field(default=None, metadata={"internal": True})
    # What the loader would have the user fix without refusing the file (logged by the daemon).
    warnings: list[ConfigProblem] = dataclasses.field(
        default_factory=list, metadata={"internal": True}
    )

    @property
    def state_path(self) -> Path:
        if self.state_dir is not None:
            return self.state_dir
        env = os.environ.get("STATE_DIRECTORY")
        return Path(env.split(":")[0]) if env else Path("/var/lib/appliance")

    @property
    def spool_path(self) -> Path:
        return self.spool.directory or self.state_path / "spool"

    @property
    def urls(self) -> ResolvedEndpoints:
        return self.endpoints.resolved()


# --------------------------------------------------------------------------
# Errors


@dataclasses.dataclass(frozen=True)
class ConfigProblem:
    """One mistake in a configuration file."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


# --------------------------------------------------------------------------
# Loading


def find_config_path(cli_path: str | os.PathLike[str] | None) -> Path | None:
    """The file to load: --config, then $APPLIANCE_CONFIG, then /etc; None = defaults."""
    if cli_path:
        return Path(cli_path)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    if DEFAULT_CONFIG_PATH.exists():
        return DEFAULT_CONFIG_PATH
    return None


def load_config(
    path: str | os.PathLike[str] | None,
    *,
    resolve_secrets: bool = True,
    limits: LoadLimits = LOAD_LIMITS,
) -> Config:
    """Load, validate and return the configuration; raise ConfigError listing every problem."""
    if path is None:
        loader = _Loader("<defaults>", limits)
        config = Config()
        root = None
    else:
        path = Path(path)
        loader = _Loader(str(path), limits)
        text = _read_config_text(path, limits.max_file_bytes)
        try:
            root = compose(text, max_depth=limits.max_depth, max_nodes=limits.max_values)
        except Refused as exc:
            raise ConfigError([ConfigProblem(str(path), exc.line, "", exc.message)]) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            what = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(
                [ConfigProblem(str(path), line, "", f"YAML syntax error: {what}")]
            ) from None
        if root is None or is_null(root):
            config = Config()
        elif not isinstance(root, yaml.MappingNode):
            raise ConfigError(
                [
                    ConfigProblem(
                        str(path),
                        root.start_mark.line + 1,
                        "",
                        "the top level must be a mapping of settings",
                    )
                ]
            )
        else:
            try:
                config = loader.build(Config, root, "")
            except Refused as exc:  # past max_values while expanding aliases
                raise ConfigError([ConfigProblem(str(path), exc.line, "", exc.message)]) from None
    config.source = loader.file
    loader.check_semantics(config, root)
    if resolve_secrets:
        _resolve_secrets(config, loader, root)
    if loader.problems:
        raise ConfigError(loader.reported())
    config.warnings = loader.warnings
    return config


def _read_config_text(path: Path, limit: int) -> str:
    """The file as text, refused unread past ``limit`` bytes (a device or a log file by mistake)."""
    name = str(path)
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(name, None, "", "file not found")]) from None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError([ConfigProblem(name, None, "", f"cannot read: {reason}")]) from None
    if len(data) > limit:
        what = f"the file is {_size(size)}" if size > limit else "the file is too large"
        raise ConfigError(
            [ConfigProblem(name, None, "", f"{what}; the limit is {_size(limit)}")]
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([ConfigProblem(name, line, "", "cannot read: not UTF-8 text")]) from None


class _Loader:
    """Walks YAML nodes against the dataclass schema, collecting problems."""

    def __init__(self, file: str, limits: LoadLimits = LOAD_LIMITS) -> None:
        self.file = file
        self.limits = limits
        self.base_dir = Path(file).resolve().parent if file != "<defaults>" else Path.cwd()
        self.problems: list[ConfigProblem] = []
        self.warnings: list[ConfigProblem] = []
        self._values_left = limits.max_values

    def problem(self, node: yaml.Node | None, key: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else None
        self.problems.append(ConfigProblem(self.file, line, key, message))

    def warn(self, node: yaml.Node | None, key: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else None
        self.warnings.append(ConfigProblem(self.file, line, key, message))

    def reported(self) -> list[ConfigProblem]:
        """The problems to show: the first ``max_problems``, then how many more there are."""
        first = self.problems[: self.limits.max_problems]
        hidden = len(self.problems) - len(first)
        if hidden:
            first.append(ConfigProblem(self.file, None, "", f"and {hidden} more problem(s)"))
        return first

    def spend(self, node: yaml.Node) -> None:
        """Count one value read; aliases make a small file stand for a huge one."""
        self._values_left -= 1
        if self._values_left < 0:
            raise Refused(
                f"the file stands for more than {self.limits.max_values} values once its "
                "aliases are expanded (the limit)",
                node,
            )

    def build(self, cls: type, node: yaml.MappingNode, prefix: str, base: Any = None) -> Any:
        """An instance of ``cls`` from a mapping; unset fields keep ``base``'s values if given."""
        fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        seen: set[str] = set()
        for key_node, value_node in node.value:
            self.spend(key_node)
            key = self.key_text(key_node, prefix)
            if key is _INVALID:
                continue
            path = f"{prefix}{_shown_key(key)}"
            if prefix == "auth." and key in _INLINE_SECRET_KEYS:
                self.problem(
                    key_node,
                    path,
                    "secrets are never given inline: put the key in a "
                    "file (auth.api_key_file, mode 0600), a systemd credential, or "
                    f"${API_KEY_ENV} for a developer's shell",
                )
                continue
            if prefix == "mqtt." and key in _INLINE_SECRET_KEYS:
                self.problem(
                    key_node,
                    path,
                    "secrets are never given inline: put the password in a file "
                    "(mqtt.password_file, mode 0600) or the systemd credential "
                    "named by mqtt.password_credential",
                )
                continue
            if key not in fields:
                # Suggestions only while they are shown: difflib costs, and a file may hold
                # thousands of wrong keys.
                shown_yet = len(self.problems) < self.limits.max_problems
                near = difflib.get_close_matches(key[:100], list(fields), n=1) if shown_yet else []
                hint = f"; did you mean '{prefix}{near[0]}'?" if near else ""
                allowed = ", ".join(fields)
                self.problem(key_node, path, f"unknown setting{hint} (allowed here: {allowed})")
                continue
            if key in seen:
                self.problem(key_node, path, "given twice")
                continue
            seen.add(key)
            field = fields[key]
            value = self.convert(hints[key], value_node, path, field)
            if value is not _INVALID:
                values[key] = value
        missing = [
            name for name, f in fields.items()
            if name not in values and name not in seen
            and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]  # fmt: skip
        for name in missing:
            self.problem(node, f"{prefix}{name}", "required setting is missing")
        if missing or len(values) != len(seen):
            # Fill what failed with defaults so the rest can still be checked.
            for name in missing:
                values[name] = None
        try:
            return dataclasses.replace(base, **values) if base is not None else cls(**values)
        except TypeError:  # pragma: no cover - defensive, problems already recorded
            return object.__new__(cls)

    def key_text(self, node: yaml.Node, prefix: str) -> Any:
        """A mapping key as written, or _INVALID (a list as a key, ``<<``, a foreign tag)."""
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, f"{prefix}?", f"a key must be a name, not {_kind(node)}")
            return _INVALID
        try:
            scalar_value(node)
        except Refused as exc:
            self.problem(node, f"{prefix}{_shown_key(node.value)}", exc.message)
            return _INVALID
        return node.value

    def convert(self, hint: Any, node: yaml.Node, path: str, field: Any = None) -> Any:
        self.spend(node)
        try:
            check_collection_tag(node)
        except Refused as exc:
            self.problem(node, path, exc.message)
            return _INVALID
        origin = get_origin(hint)
        args = get_args(hint)
        if origin in (typing.Union, types.UnionType):
            inner = [a for a in args if a is not type(None)]
            if is_null(node):
                return None
            hint = inner[0] if len(inner) == 1 else hint
            origin, args = get_origin(hint), get_args(hint)
        if origin is typing.Literal:  # its values are the setting's choices
            hint = type(args[0])
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            default = _default_of(field) if field is not None else None
            if default is not None and is_null(node):
                return default  # a section whose settings are all commented out
            if not isinstance(node, yaml.MappingNode):
                self.problem(node, path, f"expected a mapping of settings, got {_kind(node)}")
                return _INVALID
            return self.build(hint, node, path + ".", default)
        if origin is list:
            if not isinstance(node, yaml.SequenceNode):
                self.problem(node, path, f"expected a list, got {_kind(node)}")
                return _INVALID
            items = []
            for i, item in enumerate(node.value):
                value = self.convert(args[0], item, f"{path}[{i}]")
                if value is not _INVALID:
                    items.append(value)
            return items
        if origin is dict:
            if not isinstance(node, yaml.MappingNode):
                self.problem(node, path, f"expected a mapping, got {_kind(node)}")
                return _INVALID
            return self.free_form(node, path, 1)
        if hint is Any:
            return self.free_form(node, path, 1)
        value = self.scalar(hint, node, path)
        if value is _INVALID or field is None:
            return value
        limits = limits_of(field)
        if limits.choices is not None and value not in limits.choices:
            near = difflib.get_close_matches(str(value), [str(c) for c in limits.choices], n=1)
            hint_text = f"; did you mean {near[0]!r}?" if near else ""
            self.problem(
                node,
                path,
                f"{shown(value)} is not allowed{hint_text} (allowed: {limits.describe()[7:]})",
            )
            return _INVALID
        if isinstance(value, int | float) and not isinstance(value, bool):
            low, high = limits.minimum, limits.maximum
            if (low is not None and value < low) or (high is not None and value > high):
                self.problem(
                    node, path, f"{_number(value)} is out of range (allowed: {limits.describe()})"
                )
                return _INVALID
        return value

    def scalar(self, hint: Any, node: yaml.Node, path: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, path, f"expected {_type_name(hint)}, got {_kind(node)}")
            return _INVALID
        if is_null(node):
            self.problem(node, path, f"expected {_type_name(hint)}, got null")
            return _INVALID
        try:
            raw = scalar_value(node)
        except Refused as exc:
            self.problem(node, path, exc.message)
            return _INVALID
        if hint is bool:
            if isinstance(raw, bool):
                return raw
        elif hint is int:
            if isinstance(raw, int) and not isinstance(raw, bool):
                return raw
        elif hint is float:
            if isinstance(raw, float) and not math.isfinite(raw):
                self.problem(node, path, f"expected a finite number, got {node.value}")
                return _INVALID
            if isinstance(raw, int | float) and not isinstance(raw, bool):
                return float(raw)
        elif hint is str:
            if isinstance(raw, str):
                return raw
            if isinstance(raw, int | float | datetime.date) and not isinstance(raw, bool):
                return node.value  # e.g. a numeric device name; keep the text as written
        elif hint is Path and isinstance(raw, str) and raw:
            # Relative paths are relative to the config file, not to the working directory.
            return self.base_dir / Path(raw).expanduser()
        self.problem(node, path, f"expected {_type_name(hint)}, got {_describe(raw)}")
        return _INVALID

    def free_form(self, node: yaml.Node, path: str, depth: int) -> Any:
        """A setting passed on to the API as JSON: plain JSON values only, bounded nesting,
        no aliases (a self-reference or an alias bomb would hang whoever serialises it)."""
        self.spend(node)
        alias = alias_of(node)
        if alias is not None:
            self.problem(
                node,
                path,
                f"an alias (*{_shown_key(alias)}) is not allowed in a free-form "
                "setting: write the value out",
            )
            return _INVALID
        try:
            check_collection_tag(node)
        except Refused as exc:
            self.problem(node, path, exc.message)
            return _INVALID
        nested = isinstance(node, yaml.MappingNode | yaml.SequenceNode)
        if nested and depth > self.limits.max_free_form_depth:
            self.problem(
                node,
                path,
                f"nested deeper than {self.limits.max_free_form_depth} levels "
                "(the limit inside a free-form setting)",
            )
            return _INVALID
        if isinstance(node, yaml.SequenceNode):
            items = [
                self.free_form(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(node.value)
            ]
            return _INVALID if any(v is _INVALID for v in items) else items
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            valid = True
            for key_node, value_node in node.value:
                self.spend(key_node)
                key = self.json_key(key_node, path)
                if key is _INVALID:
                    valid = False
                    continue
                sub = f"{path}.{_shown_key(key)}"
                if key in result:
                    self.problem(key_node, sub, "given twice")
                    valid = False
                    continue
                value = self.free_form(value_node, sub, depth + 1)
                result[key] = value
                valid = valid and value is not _INVALID
            return result if valid else _INVALID
        assert isinstance(node, yaml.ScalarNode)  # the composer makes only these three kinds
        try:
            value = scalar_value(node)
        except Refused as exc:
            self.problem(node, path, exc.message)
            return _INVALID
        if isinstance(value, float) and not math.isfinite(value):
            self.problem(node, path, f"{node.value} is not a JSON number (allowed: finite numbers)")
            return _INVALID
        if isinstance(value, datetime.date):
            self.problem(node, path, f"a date is not a JSON value: quote it ({shown(node.value)})")
            return _INVALID
        return value

    def json_key(self, node: yaml.Node, path: str) -> Any:
        """A free-form mapping key: JSON keys are text."""
        if not isinstance(node, yaml.ScalarNode):
            self.problem(node, f"{path}.?", f"a key must be text, not {_kind(node)}")
            return _INVALID
        try:
            key = scalar_value(node)
        except Refused as exc:
            self.problem(node, f"{path}.{_shown_key(node.value)}", exc.message)
            return _INVALID
        if not isinstance(key, str):
            self.problem(node, f"{path}.{_shown_key(node.value)}", "a key must be text: quote it")
            return _INVALID
        return key

    # -- checks that span fields ------------------------------------------

    def check_semantics(self, config: Config, root: yaml.Node | None) -> None:
        def node_of(path: str) -> yaml.Node | None:
            return _find_node(root, path)

        ep = config.endpoints
        url_fields = {
            "base_url": ("http", "https"),
            "streaming_url": ("ws", "wss"),
            "streaming_token_url": ("http", "https"),
            "agent_url": ("ws", "wss"),
            "agent_token_url": ("http", "https"),
            "rest_url": ("http", "https"),
            "llm_gateway_url": ("http", "https"),
        }
        for name, schemes in url_fields.items():
            value = getattr(ep, name, None)
            if isinstance(value, str):
                self._check_url(
                    value,
                    schemes,
                    ep.allow_insecure,
                    f"endpoints.{name}",
                    node_of(f"endpoints.{name}"),
                )
        broker = config.auth.token_broker
        if isinstance(broker.url, str):
            self._check_url(
                broker.url,
                ("http", "https"),
                ep.allow_insecure,
                "auth.token_broker.url",
                node_of("auth.token_broker.url"),
            )
        for i, tool in enumerate(config.agent.tools):
            base = f"agent.tools[{i}]"
            if tool.kind == "http" and not tool.url:
                self.problem(node_of(base), f"{base}.url", "an http tool needs a url")
            if tool.kind == "http" and isinstance(tool.url, str):
                self._check_url(
                    tool.url, ("http", "https"), True, f"{base}.url", node_of(f"{base}.url")
                )
            if tool.kind == "command" and not tool.command:
                self.problem(node_of(base), f"{base}.command", "a command tool needs a command")
        self._check_outbox(config, node_of)
        for i, term in enumerate(config.live.keyterms_prompt):
            if len(term) > 50:
                self.problem(
                    node_of(f"live.keyterms_prompt[{i}]"),
                    f"live.keyterms_prompt[{i}]",
                    "a key term may have at most 50 characters",
                )
        if len(config.live.keyterms_prompt) > 100:
            self.problem(
                node_of("live.keyterms_prompt"),
                "live.keyterms_prompt",
                "at most 100 key terms are allowed",
            )
        lo, hi = config.live.min_turn_silence, config.live.max_turn_silence
        if lo is not None and hi is not None and lo > hi:
            self.problem(
                node_of("live.min_turn_silence"),
                "live.min_turn_silence",
                f"{lo} ms exceeds live.max_turn_silence ({hi} ms)",
            )
        for key, why in live_model_problems(config.live):
            self.problem(node_of(key) or node_of("live.speech_model"), key, why)
        if config.audio.source == "file" and config.audio.input_file is None:
            self.problem(
                node_of("audio.source"), "audio.input_file", "source 'file' needs audio.input_file"
            )
        self._check_capture_channels(config.audio, node_of)
        if config.audio.sink == "file" and config.audio.output_file is None:
            self.problem(
                node_of("audio.sink"), "audio.output_file", "sink 'file' needs audio.output_file"
            )
        led = config.led
        wanted = {"none": 0, "led": 1, "pwm": 1, "rgb": 3, "apa102": 0}[led.kind]
        if len(led.pins) != wanted:
            self.problem(
                node_of("led.pins") or node_of("led.kind"),
                "led.pins",
                f"led kind {led.kind!r} needs {wanted} pin(s), got {len(led.pins)}",
            )
        self._check_summary_model(config, node_of)
        if not config.upload.speech_models:
            self.problem(
                node_of("upload.speech_models"),
                "upload.speech_models",
                "at least one speech model is required",
            )
        self._check_echo_cancel(config.audio.echo_cancel, node_of)
        for key in _WRITTEN_PATHS:
            self._check_stays_inside(key, node_of(key))

    def _check_capture_channels(
        self, audio: AudioConfig, node_of: typing.Callable[[str], yaml.Node | None]
    ) -> None:
        """The channels kept or mixed exist among those opened, each once."""
        opened = audio.input_channels
        if audio.input_mix is None:
            if opened is not None and audio.input_channel >= opened:
                self.problem(
                    node_of("audio.input_channel"),
                    "audio.input_channel",
                    f"channel {audio.input_channel} is not among the {opened} opened"
                    " (channels count from 0)",
                )
            return
        key = "audio.input_mix"
        if len(set(audio.input_mix)) != len(audio.input_mix):
            self.problem(node_of(key), key, "each channel can be mixed in only once")
        for i, channel in enumerate(audio.input_mix):
            limit = opened if opened is not None else 32
            if not 0 <= channel < limit:
                where = f"the {opened} opened" if opened is not None else "channels 0..31"
                self.problem(
                    node_of(f"{key}[{i}]") or node_of(key),
                    f"{key}[{i}]",
                    f"channel {channel} is not among {where}",
                )

    def _check_outbox(
        self, config: Config, node_of: typing.Callable[[str], yaml.Node | None]
    ) -> None:
        """An enabled outbox has exactly one destination: a URL (http/https) or a command."""
        box = config.outbox
        if not box.enabled:
            return
        if (box.url is None) == (not box.command):
            self.problem(
                node_of("outbox"), "outbox.url", "an enabled outbox needs a url or a command (one)"
            )
        if isinstance(box.url, str):
            self._check_url(
                box.url, ("http", "https"), box.allow_insecure, "outbox.url", node_of("outbox.url")
            )
        if not _HEADER_NAME.fullmatch(box.auth_header):
            self.problem(
                node_of("outbox.auth_header"), "outbox.auth_header", "not an HTTP header name"
            )

    def _check_stays_inside(self, key: str, node: yaml.Node | None) -> None:
        """A relative path the daemon writes must not climb out of the configuration's
        directory: it would point somewhere else once the file is copied or moved."""
        if not isinstance(node, yaml.ScalarNode) or node.tag != STR or not node.value:
            return
        written = Path(node.value).expanduser()
        if written.is_absolute() or os.path.normpath(written).split(os.sep)[0] != "..":
            return
        self.problem(
            node,
            key,
            f"{shown(node.value)} climbs out of {self.base_dir}, the configuration's "
            "directory, where relative paths start; give an absolute path",
        )

    def _check_echo_cancel(
        self, echo_cancel: EchoCancelConfig, node_of: typing.Callable[[str], yaml.Node | None]
    ) -> None:
        """Both or neither: a canceller only removes what it plays, so recording its
        source while playing elsewhere cancels nothing."""
        if (echo_cancel.source is None) != (echo_cancel.sink is None):
            missing = "sink" if echo_cancel.sink is None else "source"
            self.problem(
                node_of("audio.echo_cancel"),
                f"audio.echo_cancel.{missing}",
                "echo cancellation needs both its source and its sink",
            )

    def _check_url(
        self,
        value: str,
        schemes: tuple[str, ...],
        allow_insecure: bool,
        key: str,
        node: yaml.Node | None,
    ) -> None:
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.hostname:
            self.problem(
                node,
                key,
                f"{_redact_url(value)!r} is not a valid URL "
                f"(allowed schemes: {', '.join(schemes)})",
            )
            return
        secure = parts.scheme in ("https", "wss")
        if not secure and not allow_insecure and not _is_loopback(parts.hostname):
            self.problem(
                node,
                key,
                "plain ws:// or http:// is only allowed to loopback hosts "
                "(set endpoints.allow_insecure to override)",
            )

    def _check_summary_model(
        self, config: Config, node_of: typing.Callable[[str], yaml.Node | None]
    ) -> None:
        """The EU gateway serves Claude and Gemini only: another model there is refused."""
        summary = config.summary
        if not summary.enabled or summary.model not in MODELS:  # an unknown id is reported
            return
        try:
            in_eu = config.urls.llm_gateway_in_eu
        except (KeyError, ValueError):
            return
        why = region_refusal(summary.model, in_eu)
        if why is not None:
            self.problem(
                node_of("summary.model") or node_of("endpoints.region"), "summary.model", why
            )


def _resolve_secrets(config: Config, loader: _Loader, root: yaml.Node | None) -> None:
    auth = config.auth
    broker = auth.token_broker
    if broker.url:
        config.broker_credential = _read_secret(
            loader,
            root,
            "auth.token_broker.credential_file",
            broker.credential_file,
            broker.credential_name,
            env=None,
            required=True,
            what="the token-broker credential",
        )
    mqtt = config.mqtt
    if mqtt.enabled or mqtt.password_file is not None:  # disabled: to remove discovery
        config.mqtt_password = _read_secret(
            loader,
            root,
            "mqtt.password_file",
            mqtt.password_file,
            mqtt.password_credential,
            env=None,
            required=False,
            what="the MQTT password",
        )
    outbox = config.outbox
    if outbox.enabled and outbox.auth_file is not None:
        config.outbox_auth = _read_private_secret(
            loader, root, "outbox.auth_file", outbox.auth_file, "the outbox credential"
        )
    config.api_key = _read_secret(
        loader,
        root,
        "auth.api_key_file",
        auth.api_key_file,
        auth.api_key_credential,
        env=API_KEY_ENV,
        required=not broker.url,
        what="the AssemblyAI API key",
    )


def _read_secret(
    loader: _Loader,
    root: yaml.Node | None,
    key: str,
    file: Path | None,
    credential: str,
    *,
    env: str | None,
    required: bool,
    what: str,
) -> Secret | None:
    node = _find_node(root, key)
    candidates: list[tuple[str, Path]] = []
    if file is not None:
        candidates.append((key, file))
    else:
        cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        if cred_dir:
            candidates.append(("systemd credential " + credential, Path(cred_dir) / credential))
    limit = loader.limits.max_secret_bytes
    for label, path in candidates:
        try:
            with path.open("rb") as f:
                mode = os.fstat(f.fileno()).st_mode
                data = f.read(limit + 1)
            value = data.decode("utf-8").strip()
        except FileNotFoundError:
            if file is not None:
                loader.problem(node, key, f"{what}: file {str(path)!r} not found")
                return None
            continue
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            loader.problem(node, key, f"{what}: cannot read {str(path)!r}: {reason}")
            return None
        if len(data) > limit:
            loader.problem(
                node, key, f"{what}: {str(path)!r} is larger than the limit of {_size(limit)}"
            )
            return None
        if not value:
            loader.problem(node, key, f"{what}: {str(path)!r} is empty")
            return None
        # A systemd credential's mode is systemd's business; a file named here is the owner's.
        warning = loose_permissions(path, mode) if file is not None else None
        if warning:
            loader.warn(node, key, f"{what}: {warning}")
        return register_secret(Secret(value, source=label))
    if env and os.environ.get(env):
        return register_secret(Secret(os.environ[env].strip(), source="$" + env))
    if required:
        hint = f", ${env}" if env else ""
        loader.problem(
            node, key, f"{what} is not set: give {key}, a systemd credential '{credential}'{hint}"
        )
    return None


def _read_private_secret(
    loader: _Loader, root: yaml.Node | None, key: str, file: Path, what: str
) -> Secret | None:
    """A secret from a file only its owner can read (0600 or 0400); a looser one is refused,
    not merely warned about: it is a credential for somebody else's server."""
    try:
        mode = file.stat().st_mode
    except OSError:
        mode = 0  # _read_secret says why it cannot be read
    loose = loose_permissions(file, mode) if mode else None
    if loose:
        loader.problem(_find_node(root, key), key, f"{what}: {loose}")
        return None
    return _read_secret(loader, root, key, file, "", env=None, required=True, what=what)


# --------------------------------------------------------------------------
# Helpers

_INVALID = object()
_INLINE_SECRET_KEYS = ("api_key", "key", "token", "credential", "password")
# An HTTP header name (RFC 9110's token).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")


def _default_of(field: dataclasses.Field[Any]) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None if field.default is dataclasses.MISSING else field.default


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if not isinstance(node, yaml.ScalarNode):
        return "a list"
    try:
        return _describe(scalar_value(node))
    except Refused:
        return f"{tag_name(node.tag)} {shown(node.value)}"


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    name = {bool: "a boolean", int: "an integer", float: "a number", str: "text"}.get(
        type(value), type(value).__name__
    )
    return f"{name} ({shown(value)})"


def _shown_key(key: str) -> str:
    """A key as it appears in a key path, cut short if someone wrote a novel there."""
    return key if len(key) <= SHOWN_CHARS else key[: SHOWN_CHARS - 1] + "…"


def _number(value: float) -> str:
    text = str(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def _size(n: int) -> str:
    """A byte count as a person reads it: 256 KiB, 50 MiB."""
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{round(n / scale, 1):g} {unit}"
    return f"{n} bytes"


def _type_name(hint: Any) -> str:
    return {
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "text",
        Path: "a file path",
    }.get(hint, str(hint))


def _find_node(root: yaml.Node | None, path: str) -> yaml.Node | None:
    """The YAML node at a dotted path like ``agent.tools[0].url`` (value node), if present."""
    node = root
    for part in path.replace("]", "").replace("[", ".").split("."):
        if node is None:
            return None
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and part.isdigit():
            idx = int(part)
            node = node.value[idx] if idx < len(node.value) else None
        else:
            return None
    return node


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.query:
        return urlunsplit(parts._replace(query="…"))
    return url
