"""The outbox: every finished transcript delivered off the device, at least once.

A transcript is queued as a row of the spool database's ``deliveries`` table
(durable, ``synchronous=FULL``) when it is finished: a field recording when
the uploader has stored its transcript (before the recording's state says
completed, so a crash queues it again, and queueing twice is a no-op), a
live session when it ends. The row is delivered when the destination
accepted it and that is recorded; a crash between the two sends it again,
with the same ``Idempotency-Key``, and the body fixed at its first attempt.

A live session waits for the spooled gaps it left to be transcribed (they
join its transcript), and any transcript waits up to
``outbox.summary_wait_seconds`` for its summary when summaries are enabled;
neither wait counts as an attempt. Every database read and write, and every
file read, runs on a worker thread: the event loop carries audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance import events as ev
from appliance.late import session_transcript_path
from appliance.outbox import payload as pl
from appliance.protocol.outbox import after_attempt, idempotency_key
from appliance.protocol.retry import Backoff, retry_limits
from appliance.spool import store as st

if TYPE_CHECKING:
    from appliance.config import Config
    from appliance.outbox.destinations import Destination
    from appliance.spool import Spool

log = logging.getLogger("appliance.outbox")

#: A transcript not ready yet (gaps untranscribed, summary awaited) is looked at again
#: this often.
NOT_READY_RECHECK_SECONDS = 10.0
#: With nothing due, look again this often anyway (rows queued by another process).
IDLE_RESCAN_SECONDS = 60.0
#: Due rows read per scan (the rest wait for the next).
BATCH = 20
#: Delivered rows are forgotten after ``history.retention_days``, at most this often.
FORGET_INTERVAL_SECONDS = 3600.0
FORGET_BATCH = 500
#: Recording states in which a live session's gap may still join its transcript.
_GAP_OPEN_STATES = (st.RECORDING, *st.PENDING_STATES)


def _crashpoint(name: str) -> None:
    """Test hook: die here, like a power cut, when $APPLIANCE_OUTBOX_CRASH_AT names this."""
    if os.environ.get("APPLIANCE_OUTBOX_CRASH_AT") == name:
        os._exit(137)


def summaries_enabled(config: Config) -> bool:
    """Does this configuration make summaries (a ``summary`` section, if the build has one)?"""
    section = getattr(config, "summary", None)
    return getattr(section, "enabled", False) is True


class Outbox:
    """Delivers queued transcripts to one destination, one at a time, in queue order."""

    #: The events :meth:`follow` acts on (its bus callback takes only these).
    FOLLOWS: ev.Kinds = (ev.SessionPhase,)

    def __init__(
        self,
        spool: Spool,
        config: Config,
        destination: Destination,
        events: ev.EventBus | None = None,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        box = config.outbox
        self.spool = spool
        self.store = spool.store
        self.state_dir = Path(config.state_path)
        self.destination = destination
        self.events = events
        self.max_attempts = box.max_attempts
        self.summary_wait = box.summary_wait_seconds if summaries_enabled(config) else 0.0
        self.history_seconds = (
            None if config.history.retention_days is None else config.history.retention_days * 86400
        )
        limits = retry_limits(
            box.retry_base_seconds, box.retry_cap_seconds, box.retry_floor_seconds
        )
        self._backoff = Backoff(limits, rng)
        self._clock = clock
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy = False
        self._forget_at = 0.0

    # -- queueing (any thread) -------------------------------------------------

    def enqueue(self, item_kind: str, item_id: str) -> bool:
        """Queue a finished transcript (blocking: a durable insert); False if queued before."""
        if item_kind not in pl.ITEM_KINDS:
            raise ValueError(f"unknown kind {item_kind!r}")
        key = idempotency_key(item_kind, item_id, self.destination.id)
        added = self.store.add_delivery(item_kind, item_id, self.destination.id, key)
        if added:
            log.info("%s %s queued for delivery (%s)", item_kind, item_id, self.destination.kind)
            self.wake()
        return added

    def recording_done(self, row: st.RecordingRow, transcript: dict[str, Any]) -> None:
        """The uploader's hook (worker thread): a field recording's transcript is stored."""
        if row.origin == pl.DELIVERED_ORIGIN:
            self.enqueue(pl.RECORDING, row.id)

    def session_ended(self, session_id: str, spooled_samples: int) -> None:
        """A live session ended (blocking): queue it if it has, or will have, a transcript."""
        try:
            path = session_transcript_path(self.state_dir, session_id)
        except ValueError:
            return
        if path.exists() or spooled_samples > 0:
            self.enqueue(pl.SESSION, session_id)

    def follow(self, published: ev.Published[ev.Event]) -> None:
        """An event-bus callback (on the loop): a live session's end queues it off the loop."""
        event = published.event
        if not (
            isinstance(event, ev.SessionPhase)
            and event.phase == "ended"
            and event.mode == "live"
            and event.session_id
        ):
            return
        spooled = (event.account or {}).get("spooled_samples", 0)
        samples = spooled if isinstance(spooled, int) else 0
        loop = self._loop
        if loop is None:
            self.session_ended(event.session_id, samples)
            return
        task = loop.create_task(asyncio.to_thread(self.session_ended, event.session_id, samples))
        task.add_done_callback(_log_failure)

    def wake(self) -> None:
        """Look for due work now (safe from any thread)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._wake.set)

    # -- the loop ----------------------------------------------------------------

    async def run(self) -> None:
        """Deliver forever (cancel to stop; what was in flight is sent again after a restart)."""
        if self._loop is not None:
            raise RuntimeError("this outbox is running already")
        self._loop = asyncio.get_running_loop()
        try:
            moved = await asyncio.to_thread(self.store.retarget_deliveries, *self._retarget())
            if moved:
                log.warning(
                    "%d pending transcript(s) go to the newly configured destination", moved
                )
            while True:
                self._wake.clear()
                now = self._clock()
                due, next_at = await asyncio.to_thread(
                    self.store.due_deliveries, self.destination.id, now, BATCH
                )
                self._busy = bool(due)
                for row in due:
                    try:
                        await self._deliver(row)
                    except st.StateConflict:  # moved meanwhile (``spool retry``): look again
                        log.info("%s %s changed while being delivered", row.item_kind, row.item_id)
                    except (sqlite3.Error, OSError) as exc:
                        await self._postpone(row, exc)
                if due and self.events is not None:
                    # The page and status line re-read the spool (and so the outbox).
                    await asyncio.to_thread(self.spool.publish_status)
                self._busy = False
                await self._forget_old()
                if due:
                    continue
                timeout = IDLE_RESCAN_SECONDS if next_at is None else max(0.0, next_at - now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), min(timeout, IDLE_RESCAN_SECONDS))
        finally:
            self._loop = None
            await self.destination.aclose()

    async def drain(self, timeout: float | None = None) -> None:
        """Run until nothing is pending for this destination (tests, one-shot tools)."""

        async def loop() -> None:
            task = asyncio.create_task(self.run())
            try:
                while not task.done():
                    await asyncio.sleep(0.05)
                    counts = await asyncio.to_thread(self.pending_count)
                    if counts == 0 and not self._busy:
                        return
                task.result()
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        await asyncio.wait_for(loop(), timeout)

    def _retarget(self) -> tuple[str, Callable[[str, str], str]]:
        here = self.destination.id
        return here, lambda kind, item_id: idempotency_key(kind, item_id, here)

    def pending_count(self) -> int:
        return self.store.delivery_counts().get(st.DELIVERY_PENDING, 0)

    # -- one delivery --------------------------------------------------------------

    async def _deliver(self, row: st.DeliveryRow) -> None:
        body = row.payload
        if body is None:
            wait = await asyncio.to_thread(self._not_ready_for, row)
            if wait is not None:
                await asyncio.to_thread(
                    self.store.update_delivery,
                    row,
                    st.DELIVERY_PENDING,
                    next_attempt_at=self._clock() + wait,
                )
                return
            try:
                body = await asyncio.to_thread(self._build, row)
            except (pl.Gone, ValueError) as exc:  # ValueError: an id that is not ours
                await self._record_failure(row, str(exc), row.attempts)
                return
            # Fixed before the first attempt: every attempt with this key sends these bytes.
            await asyncio.to_thread(
                self.store.update_delivery, row, st.DELIVERY_PENDING, payload=body
            )
        attempt = await self.destination.send(body.encode("utf-8"), row.idempotency_key)
        if attempt.verdict == "delivered":
            _crashpoint("accepted")
        step = after_attempt(attempt, row.attempts, self._clock(), self._backoff, self.max_attempts)
        name = f"{row.item_kind} {row.item_id}"
        if step.outcome == "delivered":
            await asyncio.to_thread(
                self.store.update_delivery,
                row,
                st.DELIVERY_PENDING,
                state=st.DELIVERY_DELIVERED,
                attempts=step.attempts,
                delivered_at=step.next_attempt_at,
                payload=None,
                last_error=None,
            )
            log.info("%s delivered (%s, attempt %d)", name, attempt.reason, step.attempts)
        elif step.outcome == "pending":
            await asyncio.to_thread(
                self.store.update_delivery,
                row,
                st.DELIVERY_PENDING,
                attempts=step.attempts,
                next_attempt_at=step.next_attempt_at,
                last_error=step.reason,
            )
            log.warning(
                "%s not delivered: %s; attempt %d, next in %.1f s",
                name,
                attempt.reason,
                step.attempts,
                step.next_attempt_at - self._clock(),
            )
        else:
            await self._record_failure(row, step.reason or attempt.reason, step.attempts)

    async def _postpone(self, row: st.DeliveryRow, exc: Exception) -> None:
        """The device's own trouble (the database, a file): try this one again later, so a
        fault here never turns into a hot loop; nothing is counted against the receiver."""
        log.error("%s %s: cannot deliver now (%r)", row.item_kind, row.item_id, exc)
        later = self._clock() + self._backoff.limits.cap_seconds
        try:
            await asyncio.to_thread(
                self.store.update_delivery, row, st.DELIVERY_PENDING, next_attempt_at=later
            )
        except (sqlite3.Error, st.StateConflict):
            await asyncio.sleep(IDLE_RESCAN_SECONDS)

    async def _record_failure(self, row: st.DeliveryRow, reason: str, attempts: int) -> None:
        await asyncio.to_thread(
            self.store.update_delivery,
            row,
            st.DELIVERY_PENDING,
            state=st.DELIVERY_FAILED,
            attempts=attempts,
            last_error=reason[:500],
            payload=None,
        )
        log.error("%s %s not delivered: %s", row.item_kind, row.item_id, reason)
        if self.events is not None:
            message = f"delivery of {row.item_kind} {row.item_id} failed: {reason}"
            self.events.publish(ev.ErrorReported(message=message, where="upload"))

    def _not_ready_for(self, row: st.DeliveryRow) -> float | None:
        """Seconds to wait before this transcript is complete enough to send, or None."""
        now = self._clock()
        if row.item_kind == pl.SESSION:
            gaps = self.store.all(_GAP_OPEN_STATES)
            if any(r.session_id == row.item_id for r in gaps):
                return NOT_READY_RECHECK_SECONDS
        waited = now - row.created_at
        if waited < self.summary_wait and (
            pl.stored_summary(self.state_dir, self.spool, row.item_kind, row.item_id) is None
        ):
            return min(NOT_READY_RECHECK_SECONDS, self.summary_wait - waited)
        return None

    def _build(self, row: st.DeliveryRow) -> str:
        if row.item_kind == pl.SESSION:
            data = pl.session_payload(self.state_dir, self.spool, row.item_id)
        else:
            data = pl.recording_payload(self.state_dir, self.spool, row.item_id)
        data["idempotency_key"] = row.idempotency_key
        try:
            return json.dumps(data, ensure_ascii=False, allow_nan=False)
        except ValueError:
            raise pl.Gone(
                f"{row.item_kind} {row.item_id} holds a number JSON cannot carry"
            ) from None

    async def _forget_old(self) -> None:
        if self.history_seconds is None or time.monotonic() < self._forget_at:
            return
        self._forget_at = time.monotonic() + FORGET_INTERVAL_SECONDS
        before = self._clock() - self.history_seconds
        await asyncio.to_thread(self.store.forget_deliveries, before, FORGET_BATCH)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("cannot queue a finished session for delivery: %r", task.exception())
