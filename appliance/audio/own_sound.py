"""The device's own sounds, kept out of what its microphone sends.

A speaker next to the microphone puts every earcon into the capture: the start
earcon lands right after the pre-roll and is sent to the service with the
user's first words (and transcribed as "uh").  Both ends know the times:
playback knows when a sound leaves the speaker (its callback time plus the
stream's output latency) and the ring stamps every sample with when it
arrived.  Playback notes each block of such a sound here; the ring silences,
in every read, the samples captured while it may have been audible.  Every
reader (live session, voice agent, recorder, level meter) goes through the
ring, so the rule holds in every mode in one place.  The samples are silenced,
not dropped: indexes, pre-roll, resume points and the session's audio clock
stay as they are.

A sound that left the speaker during ``[start, end]`` is in the samples
stamped ``[start, end]`` shifted by the acoustic path, and the room's echo
trails it: both are covered by a margin on each side (``audio.echo_tail_ms``).
The capture's buffer depth (PortAudio's input latency, 200 ms at 100 ms
blocks) is not added: the ring stamps a sample from the earliest delivery
seen (a lower envelope), not from when its late block arrived, so its stamp
trails the real capture only by the device's shortest delivery delay
(measured on the PulseAudio test stack through a 20 ms loopback: the earcon
reached the ring 14-17 ms after it left the speaker).

Concurrency: one writer (the playback callback), any number of readers; the
intervals are a tuple replaced whole, so readers take no lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

# How long the device's own sound may still reach the microphone after the output
# latency says it left the speaker: the acoustic path (1 ms per 34 cm) and the room's
# echo, plus the slack of the two streams' latency reports.  ``audio.echo_tail_ms``.
DEFAULT_ECHO_TAIL_SECONDS = 0.05
# Blocks closer together than this are one sound (a 10 ms block after a 10 ms block).
MERGE_GAP_SECONDS = 0.03
# Sounds remembered (an earcon is one; a reply is one per underrun-free stretch):
# far more than a ring's history holds at a time.
MAX_SOUNDS = 256


def heard_between(left_from: float, left_until: float, tail: float) -> tuple[float, float]:
    """Capture-time span whose samples may hold a sound that left the speaker in the span given.

    time.monotonic() seconds: ``left_from``/``left_until`` when the sound left
    the speaker (callback time plus output latency), ``tail`` the margin for
    the acoustic path, the echo and the two clocks' slack.
    """
    tail = max(0.0, tail)
    return (left_from - tail, left_until + tail)


def quiet_from(idle_since: float, output_latency: float, tail: float) -> float:
    """When the speaker has really stopped sounding: ``idle_since`` (playback's queue ran
    dry) plus what the device still had buffered (``output_latency``) plus ``tail``."""
    return idle_since + max(0.0, output_latency) + max(0.0, tail)


class OwnSound:
    """When the device's own sounds left its speaker (time.monotonic()), oldest first.

    The sound still growing is kept apart from the finished ones, so a block
    of a long reply costs the callback one small tuple, not a copy of all.
    """

    def __init__(
        self, tail: float = DEFAULT_ECHO_TAIL_SECONDS, max_sounds: int = MAX_SOUNDS
    ) -> None:
        self.tail = tail
        self._max_sounds = max_sounds
        self._finished: tuple[tuple[float, float], ...] = ()
        self._current: tuple[float, float] | None = None

    def left_speaker(self, start: float, end: float) -> None:
        """A block of own sound leaves the speaker during ``[start, end]`` (playback callback)."""
        current = self._current
        if current is not None and start - current[1] <= MERGE_GAP_SECONDS:
            self._current = (min(current[0], start), max(current[1], end))
            return
        if current is not None:
            # Finished first, then replaced: a reader in between sees it twice, never not.
            self._finished = (*self._finished, current)[-(self._max_sounds - 1) :]
        self._current = (start, end)

    @property
    def sounds(self) -> tuple[tuple[float, float], ...]:
        """Every remembered sound as (left from, left until), oldest first."""
        current = self._current  # read before the finished ones (see left_speaker)
        finished = self._finished
        if current is None:
            return finished
        if finished and finished[-1] == current:
            return finished
        return (*finished, current)

    def heard(self, since: float, until: float) -> Iterator[tuple[float, float]]:
        """Capture-time spans (see :func:`heard_between`) that overlap ``[since, until)``."""
        for start, end in reversed(self.sounds):
            lo, hi = heard_between(start, end, self.tail)
            if hi <= since:
                return  # older sounds end earlier still
            if lo < until:
                yield lo, hi


class _Linked(Protocol):
    """A ring buffer or a playback stream: each holds the shared record."""

    own_sound: OwnSound | None


def link_own_sound(
    ring: _Linked, playback: _Linked, tail: float = DEFAULT_ECHO_TAIL_SECONDS
) -> OwnSound:
    """Make ``ring``'s reads silence what ``playback`` notes of its own sounds."""
    own = OwnSound(tail)
    playback.own_sound = own
    ring.own_sound = own
    return own
