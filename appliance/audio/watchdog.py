"""When an audio stream counts as lost: a slow start is not a dead device.

Sans-I/O: the supervisor thread feeds :class:`StreamWatchdog` what it sees
(the time, the block count, when the last block came, whether PortAudio
still calls the stream active) and gets a :class:`Verdict` back.

Why a start-up phase (measured on the test stacks, scripts in the commit
that added this): a new output stream on a PulseAudio null sink with its
default arguments gets three callbacks at once (PortAudio filling its
buffer) and then none for 0.9-1.9 s while the sink plays out what it had
rendered ahead; a capture stream's first block came 1.3 s after opening;
on a PipeWire that had just started, the first stream got its three
callbacks and then nothing at all.  Taking those three callbacks for a
running stream and the pause for a dead device made the speaker reopen
every ~2 s forever.  So a stream is *running* only once its callbacks have
kept coming for ``settle`` seconds; until then it is starting and is lost
only when ``startup_grace`` passes without it running (a reopen then may
help: the PipeWire case).  A device that really goes away stops the stream
(PortAudio reports it inactive at once: measured when the sound server was
killed), which is lost in any phase; a running stream that stays active
but delivers nothing for ``stall_timeout`` has hung, and is lost too.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """How long a stream may take to start, and how long it may then go quiet."""

    #: From opening until the stream must be running (slowest start seen: 1.9 s).
    startup_grace: float = 5.0
    #: Callbacks must keep coming this long before the stream counts as running.
    settle: float = 0.5
    #: A running stream with no callback for this long (or ``stall_blocks``
    #: block periods, if longer) has hung.
    stall_timeout: float = 1.0
    stall_blocks: int = 10


class Health(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class Verdict:
    health: Health
    reason: str = ""


STARTING = Verdict(Health.STARTING)
RUNNING = Verdict(Health.RUNNING)


class StreamWatchdog:
    """Tells a starting, a running and a lost stream apart from what the supervisor sees."""

    def __init__(self, block_seconds: float, limits: StreamLimits | None = None) -> None:
        self.block_seconds = block_seconds
        self.limits = limits or StreamLimits()
        self._opened_at = 0.0
        self._blocks_at_open = 0
        self._first_seen_blocks: int | None = None
        self._first_seen_at = 0.0
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    @property
    def opened_at(self) -> float:
        return self._opened_at

    @property
    def stall_seconds(self) -> float:
        return max(self.limits.stall_timeout, self.limits.stall_blocks * self.block_seconds)

    @property
    def _settle_blocks(self) -> int:
        """Blocks that must follow the first ones seen: half the nominal cadence over ``settle``."""
        return max(1, math.ceil(self.limits.settle / self.block_seconds / 2))

    def next_look(self, now: float, last_block_at: float, period: float) -> float:
        """Seconds until looking at the stream again could tell something new.

        Starting: every ``period`` (it may turn running, or run out of grace).
        Running: not before a stall could be declared, ``stall_seconds`` after the
        last block, and never sooner than ``period``; looks in between find a
        healthy stream and only cost wake-ups (an idle device's most frequent
        ones).  A device that stopped is found at that look, up to
        ``stall_seconds`` after it stopped.
        """
        if not self._running:
            return period
        return max(period, last_block_at + self.stall_seconds - now)

    def opened(self, now: float, blocks: int) -> None:
        """A stream was (re)opened at ``now``; ``blocks`` is the block counter then."""
        self._opened_at = now
        self._blocks_at_open = blocks
        self._first_seen_blocks = None
        self._first_seen_at = 0.0
        self._running = False

    def observe(self, now: float, blocks: int, last_block_at: float, active: bool) -> Verdict:
        """What the stream is, given the block counter, the last block's time and activity."""
        if not active:
            return Verdict(Health.LOST, "stream stopped")
        if self._running:
            silent = now - last_block_at
            if silent > self.stall_seconds:
                return Verdict(Health.LOST, f"no callback for {silent:.1f} s")
            return RUNNING
        if blocks != self._blocks_at_open:
            if self._first_seen_blocks is None:
                self._first_seen_blocks, self._first_seen_at = blocks, last_block_at
            elif (
                blocks - self._first_seen_blocks >= self._settle_blocks
                and last_block_at - self._first_seen_at >= self.limits.settle
            ):
                self._running = True
                return RUNNING
        if now - self._opened_at > self.limits.startup_grace:
            got = "no callback" if blocks == self._blocks_at_open else "no steady callbacks"
            return Verdict(Health.LOST, f"{got} in {self.limits.startup_grace:.1f} s after opening")
        return STARTING
