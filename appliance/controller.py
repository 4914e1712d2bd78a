"""The daemon's top-level state machine: button gestures in, session actions out.

Pure logic, no I/O: the daemon feeds it gestures (from the GPIO button or the
keyboard), session endings and "the agent is speaking" changes, and carries out
the actions it returns. Which gesture does what is configured per mode
(``button.<mode>.short|long|double``); ``button.hold_to_talk`` makes a press
start and the release stop a live or record session.
"""

from __future__ import annotations

import dataclasses
import enum

from appliance.config import ButtonConfig
from appliance.modes import MODES, Mode


class Phase(enum.Enum):
    IDLE = "idle"
    ACTIVE = "active"  # a session runs
    STOPPING = "stopping"  # asked to stop; waiting for it to finish


# ---- inputs


@dataclasses.dataclass(frozen=True)
class Gesture:
    """A recognised button gesture; ``at`` is the monotonic time of the press."""

    kind: str  # short | long | double | press | release
    at: float


# ---- actions


@dataclasses.dataclass(frozen=True)
class StartSession:
    mode: str
    press_time: float  # the session's audio starts at press_time minus the pre-roll


@dataclasses.dataclass(frozen=True)
class StopSession:
    pass


@dataclasses.dataclass(frozen=True)
class Interrupt:
    """Cut the agent's reply short: flush the speaker, keep listening."""


@dataclasses.dataclass(frozen=True)
class EndTurn:
    """Close the live speaker's open turn at once (ForceEndpoint), keep listening."""


@dataclasses.dataclass(frozen=True)
class ModeChanged:
    mode: str


@dataclasses.dataclass(frozen=True)
class Earcon:
    name: str  # start | stop | error | saved | mode | volume | muted | unmuted


@dataclasses.dataclass(frozen=True)
class ChangeVolume:
    """Step the speaker's volume up (positive) or down (negative)."""

    steps: int


@dataclasses.dataclass(frozen=True)
class ToggleMute:
    """Mute the microphone, or unmute it."""


@dataclasses.dataclass(frozen=True)
class MutedPress:
    """A press that would start a session came while muted: tell the person, start nothing."""

    mode: str


Action = (
    StartSession
    | StopSession
    | Interrupt
    | ModeChanged
    | Earcon
    | ChangeVolume
    | ToggleMute
    | MutedPress
    | EndTurn
)


class Controller:
    """Decides what each gesture means in the current mode and phase."""

    def __init__(self, button: ButtonConfig, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.button = button
        self.mode = mode
        self.phase = Phase.IDLE
        self.agent_speaking = False
        #: The microphone is muted: no session may start (the daemon keeps this in step).
        self.muted = False
        self._pending_mode: Mode | None = None

    # -- inputs ------------------------------------------------------------

    def on_gesture(self, gesture: Gesture) -> list[Action]:
        if gesture.kind in ("press", "release"):
            return self._hold_to_talk(gesture)
        if self._holds_to_talk() and (gesture.kind == "short" or self.phase is not Phase.IDLE):
            # The press and release already did the work; holding while talking is not a
            # long press. When idle, long and double presses keep their meaning.
            return []
        actions = getattr(self.button, self.mode)
        action = getattr(actions, gesture.kind, "none")
        return self._do(action, gesture.at)

    def on_session_ended(self) -> list[Action]:
        """The running session finished (stopped, timed out, or failed)."""
        was_active = self.phase is not Phase.IDLE
        self.phase = Phase.IDLE
        self.agent_speaking = False
        out: list[Action] = [Earcon("stop")] if was_active else []
        if self._pending_mode is not None:
            self.mode, self._pending_mode = self._pending_mode, None
            out.append(ModeChanged(self.mode))
        return out

    def on_agent_speaking(self, speaking: bool) -> None:
        self.agent_speaking = speaking

    # -- direct requests (the local page's controls), same rules as the button --

    def request_start(self, at: float) -> list[Action]:
        return self._start(at) if self.phase is Phase.IDLE else []

    def request_stop(self) -> list[Action]:
        return self._stop()

    def request_switch_mode(self) -> list[Action]:
        return self._switch_mode()

    def request_mode(self, mode: str) -> list[Action]:
        """Move to ``mode`` by the switch rule: at once when idle, else after the running
        session, which is stopped. Nothing when it is already the mode (or pending)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        if (self._pending_mode or self.mode) == mode:
            return []
        return self._switch_to(MODES[MODES.index(mode)])

    def request_end_turn(self) -> list[Action]:
        """End the open turn of a running live session, as the ``end_turn`` gesture does."""
        if self.phase is Phase.ACTIVE and self.mode == "live":
            return [EndTurn()]
        return []

    def request_interrupt(self) -> list[Action]:
        """Cut the agent's reply short, as a press does while it speaks; else nothing."""
        if self.phase is Phase.ACTIVE and self.mode == "agent" and self.agent_speaking:
            self.agent_speaking = False
            return [Interrupt()]
        return []

    # -- rules -------------------------------------------------------------

    def _holds_to_talk(self) -> bool:
        return self.button.hold_to_talk and self.mode in ("live", "record")

    def _hold_to_talk(self, gesture: Gesture) -> list[Action]:
        if not self._holds_to_talk():
            return []
        if gesture.kind == "press" and self.phase is Phase.IDLE:
            return self._start(gesture.at)
        if gesture.kind == "release" and self.phase is Phase.ACTIVE:
            return self._stop()
        return []

    def _do(self, action: str, at: float) -> list[Action]:
        if action == "toggle":
            return self._start(at) if self.phase is Phase.IDLE else self._stop()
        if action == "start_or_interrupt":
            if self.phase is Phase.IDLE:
                return self._start(at)
            if self.phase is Phase.ACTIVE and self.mode == "agent" and self.agent_speaking:
                self.agent_speaking = False
                return [Interrupt()]
            return []
        if action == "stop":
            return self._stop()
        if action == "switch_mode":
            return self._switch_mode()
        if action == "end_turn":
            return self.request_end_turn()
        if action in ("volume_up", "volume_down"):
            return [ChangeVolume(1 if action == "volume_up" else -1)]
        if action == "mute":
            return [ToggleMute()]
        return []

    def _start(self, at: float) -> list[Action]:
        if self.muted:
            return [MutedPress(self.mode)]
        self.phase = Phase.ACTIVE
        return [Earcon("start"), StartSession(self.mode, at)]

    def _stop(self) -> list[Action]:
        if self.phase is not Phase.ACTIVE:
            return []
        self.phase = Phase.STOPPING
        return [StopSession()]

    def _switch_mode(self) -> list[Action]:
        following = MODES[(MODES.index(self._pending_mode or self.mode) + 1) % len(MODES)]
        return self._switch_to(following)

    def _switch_to(self, following: Mode) -> list[Action]:
        if self.phase is Phase.IDLE:
            self.mode = following
            return [Earcon("mode"), ModeChanged(following)]
        # Finish the running session first; the switch happens when it has ended.
        self._pending_mode = following
        return self._stop()
