"""A capture ring buffer addressed by absolute sample index.

The microphone never stops: the capture thread writes every block into one
preallocated int16 array, and everything downstream (a streaming session, the
spool writer, the level meter) reads "all samples from index A on" at its own
pace.  Absolute indices make pre-roll ("start half a second before the press")
and resume-after-reconnect ("continue from the last index the server took")
plain integer arithmetic.

Concurrency model (one writer, any number of readers, no lock):

* The writer first publishes ``_reserve_index`` (the end of the block it is
  about to write), copies the samples, then publishes ``_write_index``.
* A reader snapshots ``_write_index``, copies, then re-reads
  ``_reserve_index``: any copied sample older than ``reserve - capacity`` may
  have been overwritten while it was copying, so it is dropped and counted as
  lost.  A reader is therefore never handed torn data and never skips
  silently: every sample it does not get is reported in ``ReadResult.lost``.

Reference assignments and int stores are atomic under the GIL, which is all
this relies on; small tuples replaced whole carry the clock mapping.

Waking readers: a reader that wants index N registers a callback
(:meth:`RingBuffer.call_when_written`); the writer, after publishing a block,
calls every callback whose index it reached.  The writer only reads a tuple
that registrations replace whole, so it still takes no lock; callbacks must be
thread-safe and cheap (``loop.call_soon_threadsafe``, ``threading.Event.set``).

Clock mapping: each contiguous run of samples (a *segment*) has an origin
``t0`` such that ``time_at(i) = t0 + i / rate``.  ``t0`` is a lower envelope of
``t_first - i_first / rate`` over the blocks written (delivery is only ever
late, never early), allowed to creep up slowly so a device clock a little
slower than nominal is followed.  A device loss starts a new segment and
records a :class:`Discontinuity` with the number of samples that were never
captured; the index itself stays gapless and monotonic.

The device's own sounds: with ``own_sound`` set (see
:mod:`appliance.audio.own_sound`), every read returns as silence the samples
captured while an earcon (or a half-duplex reply) may have been audible, and
counts them in ``ReadResult.silenced``.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from appliance.audio.own_sound import OwnSound

DEFAULT_HISTORY_SECONDS = 10.0
# How fast the clock origin may drift upwards (device clock slower than the
# nominal rate), in seconds per second.  200 ppm covers cheap USB adapters.
DEFAULT_MAX_CLOCK_DRIFT = 200e-6
# How many discontinuity records are kept (each is a device loss).
DEFAULT_MAX_DISCONTINUITIES = 256
# The wait helpers are woken by the writer itself when the wanted sample is in:
# one wake-up per wanted chunk, at the moment it lands, never a poll or a guess.


@dataclass(frozen=True, slots=True)
class Discontinuity:
    """Samples before ``index`` and from ``index`` on are not contiguous in time.

    ``missing_samples`` is how much audio (at the ring's rate) was never
    captured in between, estimated from the clock; ``time`` is when capture
    resumed (time.monotonic()).
    """

    index: int
    missing_samples: int
    time: float


@dataclass(frozen=True, slots=True)
class ReadResult:
    """What a read returned.

    ``samples`` start at absolute index ``start``.  ``lost`` counts samples the
    caller asked for (from its requested start) that were already overwritten
    and are gone for good; ``start == requested_start + lost``.
    ``discontinuities`` lists capture gaps inside ``[start, end)``.
    """

    samples: np.ndarray
    start: int
    lost: int
    discontinuities: tuple[Discontinuity, ...] = ()
    silenced: int = 0  # samples returned as silence: the device's own sound was in them

    @property
    def end(self) -> int:
        """Index one past the last sample returned."""
        return self.start + len(self.samples)


class RingBuffer:
    """Preallocated int16 mono history of the capture stream, one writer, many readers."""

    def __init__(
        self,
        rate: int,
        history_seconds: float = DEFAULT_HISTORY_SECONDS,
        *,
        max_clock_drift: float = DEFAULT_MAX_CLOCK_DRIFT,
        max_discontinuities: int = DEFAULT_MAX_DISCONTINUITIES,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        capacity = round(rate * history_seconds)
        if capacity <= 0:
            raise ValueError("history_seconds too small")
        self.rate = int(rate)
        self.capacity = capacity
        self._buf = np.zeros(capacity, dtype=np.int16)
        self._write_index = 0
        self._reserve_index = 0
        self._max_drift = max_clock_drift
        self._max_discontinuities = max_discontinuities
        # (start_index, t0) of closed segments, oldest first; replaced whole.
        self._closed_segments: tuple[tuple[int, float], ...] = ()
        # (start_index, t0) of the segment being written; None before the first write.
        self._segment: tuple[int, float] | None = None
        self._last_t_first: float | None = None
        self._gap_pending = False
        # Readers to wake, replaced whole under _waiters_lock (the writer never takes it).
        self._waiters: tuple[_Waiter, ...] = ()
        self._waiters_lock = threading.Lock()
        # Sounds of the device's own to silence in reads; set by whoever links the speaker.
        self.own_sound: OwnSound | None = None

    # ------------------------------------------------------------------ writer

    def write(self, frames: np.ndarray, t_first: float) -> None:
        """Append ``frames`` (int16, 1-D, may be a strided view) captured from ``t_first``.

        ``t_first`` is the time.monotonic() of the first sample.  Called only
        from the single capture thread; cheap enough for an audio callback
        (two slice copies, a few scalar updates).
        """
        n = len(frames)
        if n == 0:
            return
        start = self._write_index
        rate = self.rate
        self._update_clock(start, n, t_first, rate)
        end = start + n
        self._reserve_index = end
        cap = self.capacity
        if n > cap:  # only the newest `cap` samples can be held
            frames = frames[n - cap :]
            start = end - cap
            n = cap
        pos = start % cap
        first = min(n, cap - pos)
        self._buf[pos : pos + first] = frames[:first]
        if first < n:
            self._buf[: n - first] = frames[first:]
        self._write_index = end
        waiters = self._waiters
        if waiters:
            for waiter in waiters:
                if end >= waiter.index:
                    waiter.fire()

    def mark_discontinuity(self) -> None:
        """Say the next write does not follow the previous one (the device was lost).

        The gap length is measured from the clock at the next write.
        """
        self._gap_pending = True

    def _update_clock(self, start: int, n: int, t_first: float, rate: int) -> None:
        candidate = t_first - start / rate
        segment = self._segment
        if segment is None:
            self._segment = (start, candidate)
        elif self._gap_pending:
            self._gap_pending = False
            self._closed_segments = (*self._closed_segments, segment)[-self._max_discontinuities :]
            self._segment = (start, candidate)
        else:
            seg_start, t0 = segment
            last = self._last_t_first
            elapsed = (t_first - last) if last is not None else 0.0
            allowed = t0 + max(elapsed, 0.0) * self._max_drift
            t0_new = candidate if candidate < allowed else allowed
            if t0_new != t0:
                self._segment = (seg_start, t0_new)
        self._last_t_first = t_first

    # ----------------------------------------------------------------- queries

    @property
    def write_index(self) -> int:
        """Index one past the newest complete sample."""
        return self._write_index

    @property
    def oldest_index(self) -> int:
        """Oldest index still held (may be overwritten by the block being written)."""
        return max(0, self._write_index - self.capacity)

    @property
    def history_seconds(self) -> float:
        return self.capacity / self.rate

    @property
    def discontinuities(self) -> tuple[Discontinuity, ...]:
        """Every capture gap recorded so far (bounded), oldest first.

        Derived from the segment clocks each time, so the gap length uses the
        settled clock origin rather than the first (possibly late) block.
        """
        segments = self._segments()
        rate = self.rate
        return tuple(
            Discontinuity(
                index=start,
                missing_samples=max(0, round((t0 - prev_t0) * rate)),
                time=t0 + start / rate,
            )
            for (_, prev_t0), (start, t0) in itertools.pairwise(segments)
        )

    def discontinuities_between(self, start: int, end: int) -> tuple[Discontinuity, ...]:
        """Capture gaps whose index lies in ``[start, end)``."""
        if not self._closed_segments:
            return ()
        return tuple(d for d in self.discontinuities if start <= d.index < end)

    def _segments(self) -> tuple[tuple[int, float], ...]:
        current = self._segment
        closed = self._closed_segments
        if current is None:
            return closed
        if closed and closed[-1][0] == current[0]:
            return closed
        return (*closed, current)

    def time_at(self, index: int) -> float:
        """time.monotonic() when sample ``index`` was captured (extrapolated past the ends)."""
        segments = self._segments()
        if not segments:
            raise LookupError("nothing written yet")
        chosen = segments[0]
        for seg in segments:
            if seg[0] <= index:
                chosen = seg
            else:
                break
        return chosen[1] + index / self.rate

    def index_at(self, t_monotonic: float) -> int:
        """Index of the sample captured at ``t_monotonic``.

        Times inside a capture gap map to the first sample after the gap;
        times before the first sample give a (possibly negative) extrapolated
        index, times after the newest give an index beyond ``write_index``.
        """
        segments = self._segments()
        if not segments:
            raise LookupError("nothing written yet")
        rate = self.rate
        result = round((t_monotonic - segments[0][1]) * rate)
        for i, (start, t0) in enumerate(segments):
            if t_monotonic < t0 + start / rate and i > 0:
                return start  # inside the gap before this segment
            result = round((t_monotonic - t0) * rate)
            if i + 1 < len(segments) and result < segments[i + 1][0]:
                return result
        return result

    def preroll_index(self, press_time: float, preroll_seconds: float) -> int:
        """Where a session triggered at ``press_time`` starts: ``preroll_seconds`` earlier.

        Clamped to what the ring still holds and to what has been written.
        """
        index = self.index_at(press_time - preroll_seconds)
        return min(max(index, self.oldest_index), self._write_index)

    # ----------------------------------------------------------------- readers

    def read(self, start: int, max_samples: int, out: np.ndarray | None = None) -> ReadResult:
        """Copy up to ``max_samples`` from absolute index ``start``.

        If ``start`` is older than the history, the overwritten part is
        reported in ``lost`` and reading continues from the oldest sample still
        held.  ``out`` (int16, length >= max_samples) avoids an allocation;
        the returned samples are then a view of it.
        """
        if start < 0:
            raise ValueError("start must be >= 0")
        cap = self.capacity
        w = self._write_index
        first_valid = max(0, w - cap)
        pos_start = max(start, first_valid)
        n = max(0, min(max_samples, w - pos_start))
        if out is None:
            out = np.empty(n, dtype=np.int16)
        elif len(out) < n:
            raise ValueError("out is too small")
        dst = out[:n]
        if n:
            pos = pos_start % cap
            first = min(n, cap - pos)
            dst[:first] = self._buf[pos : pos + first]
            if first < n:
                dst[first:] = self._buf[: n - first]
            # Anything the writer may have overwritten while we copied is dropped.
            valid_from = self._reserve_index - cap
            if valid_from > pos_start:
                drop = min(n, valid_from - pos_start)
                dst = dst[drop:]
                pos_start += drop
        end = pos_start + len(dst)
        gaps = self.discontinuities_between(pos_start, end)
        silenced = self._silence_own_sound(dst, pos_start) if self.own_sound is not None else 0
        return ReadResult(
            samples=dst,
            start=pos_start,
            lost=pos_start - start,
            discontinuities=gaps,
            silenced=silenced,
        )

    def _silence_own_sound(self, dst: np.ndarray, start: int) -> int:
        """Zero the samples of ``dst`` (a copy, from ``start``) the device's own sound may be in."""
        own = self.own_sound
        if own is None or not len(dst) or not own.sounds:
            return 0
        end = start + len(dst)
        spans = []
        for lo, hi in own.heard(self.time_at(start), self.time_at(end)):
            a, b = max(start, self.index_at(lo)), min(end, self.index_at(hi) + 1)
            if a < b:
                spans.append((a, b))
        silenced, covered = 0, start
        for a, b in sorted(spans):  # newest first from heard(); spans may overlap
            a = max(a, covered)
            if a < b:
                dst[a - start : b - start] = 0
                silenced += b - a
                covered = b
        return silenced

    def reader(self, start_index: int | None = None) -> Reader:
        """A cursor that keeps its own position (default: from now on)."""
        return Reader(self, self._write_index if start_index is None else start_index)

    def call_when_written(self, index: int, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` once ``write_index >= index``; returns a function that cancels it.

        The callback runs on the writer's thread (the audio callback), or here at
        once if the index is already written, so it must be thread-safe and
        cheap.  It runs at most once per registration (in a rare race, twice:
        callbacks must be idempotent, as waking a waiter is).
        """
        waiter = _Waiter(index, callback)
        with self._waiters_lock:
            self._waiters = (*self._waiters, waiter)
        if self._write_index >= index:  # written before the writer could see us
            waiter.fire()

        def cancel() -> None:
            with self._waiters_lock:
                self._waiters = tuple(w for w in self._waiters if w is not waiter)

        return cancel

    def wait_until(self, index: int, timeout: float | None = None) -> bool:
        """Block until ``write_index >= index``; False on timeout.

        Woken by the writer when the block holding ``index`` lands: one wake-up
        per wait, however late or irregular the device's callbacks are.
        """
        if self._write_index >= index:
            return True
        arrived = threading.Event()
        cancel = self.call_when_written(index, arrived.set)
        try:
            arrived.wait(timeout)
        finally:
            cancel()
        return self._write_index >= index

    async def wait_until_async(self, index: int, timeout: float | None = None) -> bool:
        """Asyncio form of :meth:`wait_until`."""
        if self._write_index >= index:
            return True
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()
        cancel = self.call_when_written(index, wake_loop(loop, arrived.set))
        try:
            async with asyncio.timeout(timeout):
                await arrived.wait()
        except TimeoutError:
            pass
        finally:
            cancel()
        return self._write_index >= index


def wake_loop(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> Callable[[], None]:
    """A writer callback that runs ``callback`` on ``loop`` (dropped once it is closed).

    Made on the loop's thread, it knows that thread: a writer running there (a
    file source paced by the loop) schedules directly, without the self-pipe
    write that wakes the loop from another thread.
    """
    try:
        loop_thread = threading.get_ident() if asyncio.get_running_loop() is loop else None
    except RuntimeError:
        loop_thread = None

    def wake() -> None:
        try:  # on the audio thread: a bare try costs nothing, suppress() allocates
            if threading.get_ident() == loop_thread:
                loop.call_soon(callback)
            else:
                loop.call_soon_threadsafe(callback)
        except RuntimeError:  # the loop closed while the writer was waking it: nobody waits
            pass

    return wake


class _Waiter:
    """A reader's wish to be woken at ``index``; fires its callback once."""

    __slots__ = ("callback", "fired", "index")

    def __init__(self, index: int, callback: Callable[[], None]) -> None:
        self.index = index
        self.callback = callback
        self.fired = False

    def fire(self) -> None:
        if not self.fired:
            self.fired = True
            self.callback()


class Reader:
    """An independent read position on a :class:`RingBuffer`.

    Each consumer owns one; ``lost_total`` accumulates every sample this
    reader never received because it fell behind the history.
    """

    def __init__(self, ring: RingBuffer, start_index: int) -> None:
        self.ring = ring
        self.position = max(0, start_index)
        self.lost_total = 0

    @property
    def available(self) -> int:
        """Samples written but not yet read (some may already be overwritten)."""
        return max(0, self.ring.write_index - self.position)

    def read(self, max_samples: int, out: np.ndarray | None = None) -> ReadResult:
        """Read up to ``max_samples`` from the current position and advance past them."""
        result = self.ring.read(self.position, max_samples, out)
        self.position = result.end
        self.lost_total += result.lost
        return result

    def seek(self, index: int) -> None:
        """Move to ``index`` (e.g. the last index a server acknowledged)."""
        self.position = max(0, index)

    def wait(self, min_samples: int = 1, timeout: float | None = None) -> bool:
        """Block until at least ``min_samples`` are available."""
        return self.ring.wait_until(self.position + min_samples, timeout)

    async def wait_async(self, min_samples: int = 1, timeout: float | None = None) -> bool:
        """Asyncio form of :meth:`wait`."""
        return await self.ring.wait_until_async(self.position + min_samples, timeout)
