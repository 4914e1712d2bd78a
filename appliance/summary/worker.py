"""The summary worker: asks the LLM Gateway for each queued summary, retries, stores it once.

What queues a summary: the end of a live session (its ``session`` event,
phase ``ended``) and a field recording's transcript (the uploader's
``on_transcript``, called before the recording is marked completed, so a
crash in between queues it again, and queueing is idempotent). A live
session whose end was never seen (the process died during it, or between its
end and the queueing) is caught up at the next start: every session
transcript on disk that was last written before this process started and
after summaries were first queued on the device, with neither a row nor a
stored summary, is queued then. Nothing else can be writing those files, and
what the history's retention deleted is not there to be found. Each summary
is a row of :mod:`appliance.summary.jobs` in the spool database; the worker
takes due rows one at a time:

* a summary already stored (``stored``) is never asked for again: its row is
  just marked completed (a crash between storing and marking);
* a live session whose spooled gaps are still being transcribed waits for
  them (their late turns belong in its summary); nothing said, nothing asked;
* ``pending -> requesting`` is written before the request. The answer is
  stored (write, fsync, rename) **before** anything else, then the row is
  completed, then the ``summary`` event is published.
* **Never charged twice.** The gateway has no idempotency key and no list of
  past completions to reconcile against, so a request whose answer was never
  seen (a timeout or a dropped connection once it was sent; a process that
  died in ``requesting``, even between the answer and its file) is not sent
  again by itself: the row fails with ``summary outcome unknown`` and waits
  for a person (``appliance spool retry <id>``). A summary is cheap, but paying for it
  twice without being asked is what this rules out. A refusal that proves the
  request was not taken (connection refused, 429, 408, 5xx) is retried with
  full-jitter backoff like the uploader's (429 after its ``Retry-After``),
  ``summary.max_attempts`` times; any other 4xx fails at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from appliance import events as ev
from appliance.cloud import rest
from appliance.late import session_transcript_path
from appliance.protocol.gateway import chat_request
from appliance.protocol.retry import Backoff, retry_limits
from appliance.spool import store as st
from appliance.spool.uploader import DEFAULT_RETRY_BASE_SECONDS, DEFAULT_RETRY_CAP_SECONDS
from appliance.summary import jobs as sj
from appliance.summary import text
from appliance.summary.stored import StoredSummary, SummaryPaths

if TYPE_CHECKING:
    from appliance.cloud.gateway import GatewayClient
    from appliance.config import SummaryConfig

log = logging.getLogger("appliance.summary")

#: The recording origin that is summarised (a live gap joins its session's summary).
SUMMARISED_ORIGIN = "record"
#: How often a session waiting for its spooled gaps looks again.
GAP_RECHECK_SECONDS = 5.0
#: What the uploader calls with each completed recording and its transcript.
TranscriptHook = Callable[[st.RecordingRow, dict[str, Any]], object]
#: Live sessions' transcripts, under the state directory (``late.session_transcript_path``).
TRANSCRIPTS_DIR = "transcripts"
#: With nothing due, look again this often anyway.
IDLE_RESCAN_SECONDS = 30.0
#: States of a session's gap recordings that its summary waits for.
_GAP_OPEN = (st.RECORDING, *st.PENDING_STATES)


class SummaryWorker:
    """Background task that makes every queued summary exactly once (see the module doc)."""

    def __init__(
        self,
        jobs: sj.SummaryJobs,
        client: GatewayClient,
        config: SummaryConfig,
        paths: SummaryPaths,
        events: ev.EventBus | None = None,
        *,
        recordings: st.Store | None = None,
        retry_base: float = DEFAULT_RETRY_BASE_SECONDS,
        retry_cap: float = DEFAULT_RETRY_CAP_SECONDS,
        rng: random.Random | None = None,
    ) -> None:
        self.jobs = jobs
        self.client = client
        self.config = config
        self.paths = paths
        self.events = events
        #: The spool's recordings, to see a live session's gaps still on their way.
        self.recordings = recordings
        server_cap = client.gate.limits.retry_after_cap_seconds
        limits = retry_limits(retry_base, retry_cap, retry_after_cap_seconds=server_cap)
        self._retry = Backoff(limits, rng or random.Random())
        self._wake = asyncio.Event()
        self._busy = False
        #: Session transcripts written before this are not this process's: caught up at start.
        self.started_at = time.time()
        self._recovered = False  # the start's recovery and catch-up are done

    # -- queueing (any thread) ---------------------------------------------

    def on_transcript(self, row: st.RecordingRow, transcript: dict[str, Any]) -> None:
        """The uploader's subscriber (worker thread): queue a field recording's summary."""
        if row.origin == SUMMARISED_ORIGIN and self.jobs.add("recording", row.id):
            log.info("summary of recording %s queued", row.id)

    def queue_after(self, hook: TranscriptHook | None) -> TranscriptHook:
        """The uploader's ``on_transcript``: ``hook`` (if any), then :meth:`on_transcript`.

        A failing ``hook`` is logged; the summary is queued all the same."""

        def both(row: st.RecordingRow, transcript: dict[str, Any]) -> None:
            if hook is not None:
                try:
                    hook(row, transcript)
                except Exception as exc:
                    log.error("transcript subscriber failed for %s: %r", row.id, exc)
            self.on_transcript(row, transcript)

        return both

    def queue_session(self, session_id: str) -> None:
        """Queue a finished live session's summary (blocking: a database write)."""
        if self.jobs.add("session", session_id):
            log.info("summary of session %s queued", session_id)

    def wake(self) -> None:
        self._wake.set()

    # -- running -------------------------------------------------------------

    async def run(self) -> None:
        """Make summaries until cancelled (a step cut short resumes after a restart)."""
        sessions = asyncio.create_task(self._follow_sessions(), name="summary-sessions")
        try:
            self._recovered = False
            await asyncio.to_thread(self._recover)
            await asyncio.to_thread(self.catch_up_sessions)
            self._recovered = True
            while True:
                self._wake.clear()
                next_at = await self._work_once()
                timeout = IDLE_RESCAN_SECONDS if next_at is None else next_at - time.time()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(0.0, timeout))
        finally:
            sessions.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sessions

    async def drain(self, timeout: float) -> None:
        """Run until no summary is pending or being asked for (tests, the demo)."""

        async def loop() -> None:
            task = asyncio.create_task(self.run())
            try:
                while True:
                    await asyncio.sleep(0.05)
                    if task.done():
                        task.result()
                        return
                    if not self._recovered or self._busy:
                        continue
                    if not self.jobs.in_states(sj.PENDING, sj.REQUESTING):
                        return
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        await asyncio.wait_for(loop(), timeout)

    async def _follow_sessions(self) -> None:
        """Queue each live session's summary as it ends."""
        if self.events is None:
            return
        async for published in self.events.subscribe((ev.SessionPhase,)):
            event = published.event
            if not isinstance(event, ev.SessionPhase) or event.session_id is None:
                continue
            if event.phase == "ended" and event.mode == "live":
                try:
                    await asyncio.to_thread(self.queue_session, event.session_id)
                except Exception as exc:  # the session's transcript is kept either way
                    log.error("cannot queue the summary of %s: %s", event.session_id, exc)
                self.wake()

    def _recover(self) -> None:
        """Rows a previous process left ``requesting``: stored, or an outcome never seen."""
        for job in self.jobs.in_states(sj.REQUESTING):
            if self.paths.read(job.source, job.source_id) is not None:
                self.jobs.move(job, sj.REQUESTING, sj.COMPLETED)
                continue
            self._fail(
                job,
                sj.REQUESTING,
                f"{sj.UNKNOWN_OUTCOME}: the process stopped while the gateway was asked; "
                "retry it to ask (and pay) again",
            )

    def catch_up_sessions(self) -> list[str]:
        """Queue the summaries of finished sessions whose end was never seen (module doc);
        the session ids queued."""
        folder = self.paths.state_dir / TRANSCRIPTS_DIR
        try:
            found = [p for p in folder.iterdir() if p.suffix == ".jsonl"]
        except OSError:
            return []  # no session was ever transcribed here
        queued: list[str] = []
        for path in found:
            session_id = path.stem
            try:
                session_transcript_path(self.paths.state_dir, session_id)  # one of ours?
                written = path.stat().st_mtime
            except (ValueError, OSError):
                continue
            if not self.jobs.opened_at <= written < self.started_at:
                continue
            if self.paths.read("session", session_id) is not None:
                continue
            if self.jobs.add("session", session_id):
                log.warning(
                    "summary of session %s queued at start (its end was not seen)", session_id
                )
                queued.append(session_id)
        return queued

    async def _work_once(self) -> float | None:
        """Do every due summary; the time the next one is due, if any."""
        next_at: float | None = None
        for job in await asyncio.to_thread(self.jobs.in_states, sj.PENDING):
            now = time.time()
            if job.next_attempt_at > now:
                next_at = (
                    job.next_attempt_at if next_at is None else min(next_at, job.next_attempt_at)
                )
                continue
            self._busy = True
            try:
                await self._make(job)
            except Exception as exc:
                log.exception("summary of %s %s crashed: %r", job.source, job.source_id, exc)
            finally:
                self._busy = False
            again = await asyncio.to_thread(self.jobs.get, job.source, job.source_id)
            if again is not None and again.state == sj.PENDING:
                at = again.next_attempt_at
                next_at = at if next_at is None else min(next_at, at)
        return next_at

    # -- one summary -------------------------------------------------------

    async def _make(self, job: sj.SummaryJob) -> None:
        if await asyncio.to_thread(self.paths.read, job.source, job.source_id) is not None:
            self.jobs.move(job, sj.PENDING, sj.COMPLETED)  # stored before a crash: not again
            return
        if job.source == "session" and self._gaps_open(job.source_id):
            self.jobs.move(
                job, sj.PENDING, sj.PENDING, next_attempt_at=time.time() + GAP_RECHECK_SECONDS
            )
            return
        try:
            transcript = await asyncio.to_thread(self._transcript, job)
        except (OSError, ValueError) as exc:
            self._fail(job, sj.PENDING, f"its transcript cannot be read: {exc}")
            return
        if not transcript.strip():
            log.info("nothing was said in %s %s: no summary", job.source, job.source_id)
            self.jobs.move(job, sj.PENDING, sj.SKIPPED)
            return
        cfg = self.config
        body = chat_request(cfg.model, cfg.prompt, transcript, cfg.max_tokens)
        if not self.jobs.move(job, sj.PENDING, sj.REQUESTING):
            return  # moved by someone else meanwhile
        try:
            completion = await self.client.complete(body)
        except rest.RateLimited as exc:
            wait = self._retry.delay_for(job.attempts, exc.retry_after)
            log.info("summary rate limited; next try in %.1f s", wait)
            self.jobs.move(
                job,
                sj.REQUESTING,
                sj.PENDING,
                next_attempt_at=time.time() + wait,
                last_error=str(exc),
            )
            return
        except rest.Transient as exc:
            if exc.status is None and not exc.network:
                self._fail(job, sj.REQUESTING, f"{sj.UNKNOWN_OUTCOME}: {exc}; retry to ask again")
                return
            self._retry_later(job, exc)
            return
        except rest.Permanent as exc:
            self._fail(job, sj.REQUESTING, str(exc))
            return
        summary = StoredSummary(
            source=job.source,
            source_id=job.source_id,
            model=cfg.model,
            text=completion.text,
            truncated=completion.truncated,
            made_at=time.time(),
            completion_id=completion.completion_id,
        )
        await asyncio.to_thread(self.paths.store, summary)  # first: it is paid for
        self.jobs.move(job, sj.REQUESTING, sj.COMPLETED)
        log.info(
            "summary of %s %s stored (%d characters)", job.source, job.source_id, len(summary.text)
        )
        if self.events is not None:
            self.events.publish(
                ev.SummaryStored(
                    source=job.source,
                    source_id=job.source_id,
                    text=summary.text,
                    model=summary.model,
                    truncated=summary.truncated,
                )
            )

    def _transcript(self, job: sj.SummaryJob) -> str:
        if job.source == "session":
            path = session_transcript_path(self.paths.state_dir, job.source_id)
            return text.read_session(path) if path.exists() else ""  # no final turn: no file
        transcript = self.paths.path("recording", job.source_id).with_name("transcript.json")
        return text.read_recording(transcript)

    def _gaps_open(self, session_id: str) -> bool:
        if self.recordings is None:
            return False
        return any(r.session_id == session_id for r in self.recordings.all(_GAP_OPEN))

    def _retry_later(self, job: sj.SummaryJob, exc: rest.RestError) -> None:
        attempts = job.attempts + 1
        if attempts >= self.config.max_attempts:
            self._fail(job, sj.REQUESTING, f"gave up after {attempts} attempts: {exc}")
            return
        wait = self._retry.delay_for(attempts)
        log.info("summary: %s; attempt %d, next in %.1f s", exc, attempts, wait)
        self.jobs.move(
            job,
            sj.REQUESTING,
            sj.PENDING,
            attempts=attempts,
            next_attempt_at=time.time() + wait,
            last_error=str(exc)[:500],
        )

    def _fail(self, job: sj.SummaryJob, expect: str, reason: str) -> None:
        log.error("summary of %s %s failed: %s", job.source, job.source_id, reason)
        self.jobs.move(job, expect, sj.FAILED, last_error=reason[:500])
        if self.events is not None:
            self.events.publish(
                ev.ErrorReported(message=f"summary failed: {reason}", where="summary")
            )
