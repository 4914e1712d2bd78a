"""Settings of the local AssemblyAI emulator: every limit is a named field."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

#: The key the emulator accepts when none is configured (``appliance demo``).
DEMO_API_KEY = "emulator-demo-key-0000000000000000"

#: A looser pacing option (``--loose-pacing``): a backlog may be caught up at
#: up to 1.5x real time. Never the default: the service promises no such slack.
LOOSE_RATE_ALLOWANCE = 1.5


@dataclass
class AgentScript:
    """What the emulated voice agent "says": its speech is DTMF digits.

    ``greeting_digits`` render the greeting; ``reply_digits`` (None = echo the
    digits the user said) render each reply. ``tool_triggers`` map a digit
    string the user says to ``(tool_name, arguments)``; the reply after the
    matching ``tool.result`` speaks the DTMF characters found in the result.
    """

    greeting_digits: str = "0"
    reply_digits: str | None = None
    tool_triggers: dict[str, tuple[str, dict]] = field(default_factory=dict)


@dataclass
class EmulatorConfig:
    """Everything the emulator enforces or simulates, with service-like defaults.

    ``time_scale`` multiplies every server-side duration (token lifetime,
    session cap, agent resume window, inactivity timeout, transcript
    processing); audio pacing and turn detection always follow the audio's own
    clock. Tests use a small scale (for example 0.05) to see expiry quickly.

    Pacing is the documented rule read strictly: audio received on a
    connection may exceed ``rate_allowance`` times the wall time since its
    ``Begin`` / ``session.ready`` by at most ``max_lead_s`` (one maximum-size
    frame). ``rate_allowance`` above 1.0 (``LOOSE_RATE_ALLOWANCE``) lets a
    backlog catch up faster than real time, which the service does not promise.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    api_keys: tuple[str, ...] = (DEMO_API_KEY,)
    time_scale: float = 1.0
    rate_allowance: float = 1.0
    max_lead_s: float = 1.0
    max_concurrent_sessions: int = 100
    default_session_s: float = 3 * 3600.0
    default_token_session_s: float = 10800.0
    agent_resume_window_s: float = 30.0
    #: Pre-recorded job timing (nominal seconds, scaled by time_scale).
    transcript_queue_s: float = 1.0
    transcript_processing_s: float = 1.5
    transcript_processing_per_audio_s: float = 0.1
    #: Streaming turn detection defaults (ms of silence after the last word).
    default_min_turn_silence_ms: int = 400
    default_max_turn_silence_ms: int = 1280
    #: Voice agent defaults.
    agent_default_min_silence_ms: int = 400
    agent_default_max_silence_ms: int = 1280
    agent_reply_chunk_ms: int = 100
    #: How far ahead of real time reply audio is sent (playback buffer lead).
    agent_reply_lead_s: float = 0.2
    agent_script: AgentScript = field(default_factory=AgentScript)
    #: Client rules judged into ``state.violations`` (real seconds, never scaled).
    #: A request of a product sooner than this after a failed one is a violation.
    retry_min_gap_s: float = 0.1
    #: This many successive retry delays within ``retry_delay_tolerance_s`` plus
    #: ``retry_delay_tolerance_fraction`` of their size are "identical" (no jitter).
    identical_retry_delays_run: int = 4
    retry_delay_tolerance_s: float = 0.001
    retry_delay_tolerance_fraction: float = 0.005
    #: Retry-After waits up to this long are enforced; longer ones are left to
    #: the client's own cap and not judged.
    retry_after_judged_max_s: float = 60.0
    #: Malformed frames (``garble`` modes): nesting depth and string length.
    garble_nesting_depth: int = 100_000
    garble_string_chars: int = 900_000
    #: Where uploads and per-session WAV files go (None: a temporary directory).
    data_dir: Path | None = None
    #: Keep each session's received audio as a WAV file in data_dir/sessions.
    save_session_audio: bool = True

    def scaled(self, seconds: float) -> float:
        """A nominal server-side duration in real seconds under ``time_scale``."""
        return seconds * self.time_scale
