"""Field-recorder mode: copy the capture ring into a spool recording until told to stop.

The runner reads from ``start_index`` (the button press minus pre-roll) at
the capture rate, writes into a spool recording and syncs at least once a
second, so a power cut costs at most the last second. The copying runs on a
thread of its own, woken by the ring's writer when a chunk is complete (or by
a stop): the event loop is not woken while a recording runs, nor is a worker
thread handed each chunk (measured: see BENCHMARKS.md, recording row). Audio the reader could
not get from the ring (it fell behind the history) and audio the spool
refused (full) are both counted and stored with the recording as gaps:
never hidden. When the spool has room again, writing simply continues.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import ClassVar

import numpy as np

from appliance import events as ev
from appliance.audio.ring import Reader, RingBuffer
from appliance.logs import log_context
from appliance.protocol.account import Account, AccountMode
from appliance.spool.spool import RecordingWriter, Spool, SpoolFull

log = logging.getLogger("appliance.spool.recorder")

# Audio moved to the spool per wake-up of the copying thread. Durability comes
# from the writer's sync (at least once a second), not from this; a larger chunk
# is fewer wake-ups, a smaller one less audio only in RAM at a power cut.
DEFAULT_CHUNK_SECONDS = 0.25
# The copying thread looks at its flags at least this often, even if neither
# the ring's writer nor a stop wakes it (a capture that stopped delivering).
WAIT_SECONDS = 1.0


@dataclasses.dataclass(kw_only=True)
class RecordingAccount(Account):
    """What a recording run did, sample by sample (at the capture rate).

    ``captured == written + lost``: written into the recording is its
    ``delivered`` (nothing of a recording missed a live delivery, so nothing
    is ``spooled``); ``lost`` counts what the ring overwrote before it was read
    and, of that, ``refused_samples``: read, but the spool was full.
    """

    mode: AccountMode = "record"
    recording_id: str
    start_index: int
    end_index: int = 0
    refused_samples: int = 0
    started_at: float = 0.0

    delivered_as: ClassVar[str] = "written"
    delivered_key: ClassVar[str | None] = "samples_written"

    @property
    def samples_written(self) -> int:
        """Written into the recording: a recording's delivered audio."""
        return self.delivered_samples

    def details(self) -> str:
        return f"recording {self.recording_id}, {self.refused_samples} refused (spool full)"


class Recording:
    """One field recording: ``await run(start_index)``, ``request_stop()`` to end it."""

    def __init__(
        self,
        ring: RingBuffer,
        spool: Spool,
        *,
        origin: str = "record",
        events: ev.EventBus | None = None,
        chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
        session_id: str | None = None,
    ) -> None:
        self.ring = ring
        self.spool = spool
        self.origin = origin
        self.events = events if events is not None else spool.events
        self.chunk = max(1, round(ring.rate * chunk_seconds))
        self.session_id = session_id
        self._stop_at: int | None = None
        self._abandon = False  # the run was cancelled: the thread stops where it is
        self._wakeup = threading.Event()  # the copying thread's: a chunk, a stop
        self.writer: RecordingWriter | None = None
        self.account: RecordingAccount | None = None

    def request_stop(self, end_index: int | None = None) -> None:
        """End the recording at ``end_index`` (default: everything captured up to now)."""
        self._stop_at = self.ring.write_index if end_index is None else end_index
        self._wakeup.set()

    def interrupt(self) -> None:
        """Nothing to interrupt: a recording never talks."""

    async def run(self, start_index: int) -> RecordingAccount:
        """Record from ``start_index`` until stopped; return the account. Raises SpoolFull
        only if the recording cannot even be opened."""
        ring = self.ring
        started_at = time.time() - max(0, ring.write_index - start_index) / ring.rate
        writer = await asyncio.to_thread(
            self.spool.open_recording,
            self.origin,
            ring.rate,
            self.session_id,
            started_at,
        )
        self.writer = writer
        account = RecordingAccount(
            recording_id=writer.id, rate=ring.rate, start_index=start_index, end_index=start_index
        )
        account.started_at = started_at
        self.account = account
        reader = ring.reader(start_index)
        self._publish(ev.SessionPhase(phase="started", mode="record", session_id=writer.id))
        self._publish(ev.StateChanged(state="recording", mode="record", detail=writer.id))
        with log_context(RECORDING_ID=writer.id, MODE="record"):
            done: concurrent.futures.Future[None] = concurrent.futures.Future()
            done.set_running_or_notify_cancel()  # a cancelled run cannot cancel it: it ends
            copying = threading.Thread(
                target=contextvars.copy_context().run,
                args=(self._copy_thread, done, reader, writer, account),
                name="recorder",
                daemon=True,
            )
            copying.start()
            try:
                await asyncio.wrap_future(done)
            finally:
                # Cancelled (or failed): the thread stops before the writer is closed,
                # which is not thread-safe.
                self._abandon = True
                self._wakeup.set()
                await asyncio.to_thread(copying.join)
                account.end_index = reader.position
                account.captured_samples = account.end_index - start_index
                await asyncio.to_thread(writer.close)
                self._publish(
                    ev.SessionPhase(
                        phase="ended",
                        mode="record",
                        session_id=writer.id,
                        account=account.as_dict(),
                    )
                )
        log.log(
            logging.ERROR if account.lost_samples else logging.INFO,
            "recording %s done: %s",
            writer.id,
            account.summary(),
        )
        return account

    def _publish(self, event: ev.Event) -> None:
        if self.events is not None:
            self.events.publish(event)

    def _copy_thread(
        self,
        done: concurrent.futures.Future[None],
        reader: Reader,
        writer: RecordingWriter,
        account: RecordingAccount,
    ) -> None:
        try:
            self._copy(reader, writer, account)
        except BaseException as exc:  # handed to the loop, which re-raises it
            done.set_exception(exc)
        else:
            done.set_result(None)

    def _copy(self, reader: Reader, writer: RecordingWriter, account: RecordingAccount) -> None:
        """On the copying thread: ring -> recording, chunk by chunk, until the stop index."""
        buf = np.empty(self.chunk, dtype=np.int16)
        start_index = account.start_index
        while not self._abandon:
            # Cleared before the flags are read: a stop from now on wakes the wait below.
            self._wakeup.clear()
            stop_at = self._stop_at
            if stop_at is not None and reader.position >= stop_at:
                return
            want = self.chunk if stop_at is None else min(self.chunk, stop_at - reader.position)
            if reader.available < want:
                cancel = self.ring.call_when_written(reader.position + want, self._wakeup.set)
                try:
                    self._wakeup.wait(WAIT_SECONDS)
                finally:
                    cancel()
                continue
            result = reader.read(want, buf)
            if result.lost:
                account.lost_samples += result.lost
                writer.note_lost(result.lost)
                log.error("recorder fell behind: %d samples lost", result.lost)
            if len(result.samples):
                self._write(writer, result.samples, account)
            account.end_index = reader.position
            account.captured_samples = account.end_index - start_index

    def _write(
        self, writer: RecordingWriter, samples: np.ndarray, account: RecordingAccount
    ) -> None:
        try:
            writer.write(samples)
        except SpoolFull:
            account.refused_samples += len(samples)
            account.lost_samples += len(samples)
            writer.note_lost(len(samples))
            return
        account.delivered_samples += len(samples)


class Refusal:
    """Record mode without a usable spool: each press is refused, said once per press.

    There is nowhere durable to put the audio, so nothing is recorded rather
    than something that would be lost; live and agent modes are unaffected.
    """

    def __init__(
        self,
        problem: str,
        events: ev.EventBus | None = None,
        on_notice: Callable[[str], None] | None = None,
    ) -> None:
        self.problem = problem
        self.events = events
        self.on_notice = on_notice

    def request_stop(self, *, end_index: int | None = None) -> None:
        pass

    def interrupt(self) -> None:
        pass

    async def run(self, start_index: int) -> None:
        message = f"cannot record: spool unavailable: {self.problem}"
        log.error("%s", message)
        if self.events is not None:
            self.events.publish(ev.ErrorReported(message=message, where="record"))
            self.events.publish(
                ev.StateChanged(state="error", mode="record", detail="spool unavailable")
            )
        if self.on_notice is not None:
            self.on_notice("error")
