"""The uploader: moves every ready recording through upload, submit and poll to a transcript.

Each step records its intent in the store *before* the network call and its
result right after, so a restart resumes each recording at the step it
stopped in, and no step is applied twice:

* ``ready -> uploading -> uploaded``: the upload URL is remembered per content
  hash, so content already uploaded is never sent again. A crash while
  ``uploading`` just uploads again (an upload creates no transcript).
* ``uploaded -> submitting -> submitted``: the dangerous window is between
  "the server accepted POST /v2/transcript" and "we stored the id". The rule:
  **a submit whose outcome is unknown is never blindly repeated.** A row
  found in ``submitting`` (after a crash, or after a timeout / dropped
  connection once the request was sent) is reconciled by listing the
  account's transcripts (``GET /v2/transcript``) and adopting the one whose
  ``audio_url`` is our upload URL (upload URLs are unique per upload). Only
  when the list proves no transcript exists is it submitted again. If the
  server cannot list transcripts the recording is marked failed with reason
  ``submit outcome unknown`` and waits for a person (``appliance spool retry``),
  because a duplicate costs money and a human can check the dashboard.
  Errors that prove the request was *not* accepted (connection refused, 429,
  5xx, 3xx/4xx) go back to ``uploaded`` safely. An answer that came back
  accepted but unusable (not JSON, no id, an id that is not ours to put in a
  URL) is treated like a lost answer: reconciled, never submitted again.
  Before each submit is sent its upload URL is written beside the audio
  (``submit.json``), so a rebuilt database and ``appliance spool retry`` know
  to reconcile it too.
* ``submitted -> completed``: poll with growing intervals, then fetch SRT and
  VTT and store all three beside the audio (write, fsync, rename, fsync dir)
  before the state changes; a crash in between just fetches them again.

Failures: 429 waits for Retry-After; 5xx and timeouts back off with full
jitter and count an attempt (``max_attempts`` then ``failed``); any other 4xx
fails at once, keeping the reason for ``appliance spool retry``. When the
network is down the uploader goes quiet: one log line, then a capped-backoff
reachability probe, and work resumes right after it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

from appliance import events as ev
from appliance.cloud import rest
from appliance.logs import log_context
from appliance.protocol.retry import Backoff, retry_limits
from appliance.spool import store as st
from appliance.spool.ids import InvalidId, check_transcript_id
from appliance.spool.spool import Spool
from appliance.spool.wavseg import fsync_dir

if TYPE_CHECKING:
    from appliance.config import UploadConfig

log = logging.getLogger("appliance.spool.uploader")

DEFAULT_RETRY_BASE_SECONDS = 2.0
DEFAULT_RETRY_CAP_SECONDS = 600.0
DEFAULT_PROBE_BASE_SECONDS = 1.0
DEFAULT_PROBE_CAP_SECONDS = 60.0
# With nothing due, look again this often anyway (retention, rows added by the CLI).
IDLE_RESCAN_SECONDS = 30.0
PROGRESS_FRACTION = 0.10
PROGRESS_SECONDS = 5.0
MAX_TASKS = 8
#: Old audio is expired and old recordings forgotten at most this often, on a worker thread.
HOUSEKEEPING_INTERVAL_SECONDS = 60.0
UNKNOWN_SUBMIT = st.UNKNOWN_SUBMIT


def _crashpoint(name: str) -> None:
    """Test hook: die here, like a power cut, when $APPLIANCE_SPOOL_CRASH_AT names this point."""
    if os.environ.get("APPLIANCE_SPOOL_CRASH_AT") == name:
        os._exit(137)


def write_durably(path: Path, data: str) -> None:
    """Write, fsync, rename, fsync the directory: the file is whole or absent."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    fsync_dir(path.parent)


# How long a recording waits for an identical twin's submit before looking again.
TWIN_WAIT_SECONDS = 1.0


class _Offline(Exception):
    """Raised inside a step when the network is down; the row is untouched."""


class Uploader:
    """Background task that drains the spool; one upload at a time by default."""

    def __init__(
        self,
        spool: Spool,
        client: rest.RestClient,
        upload_config: UploadConfig,
        events: ev.EventBus | None = None,
        *,
        retry_base: float = DEFAULT_RETRY_BASE_SECONDS,
        retry_cap: float = DEFAULT_RETRY_CAP_SECONDS,
        probe_base: float = DEFAULT_PROBE_BASE_SECONDS,
        probe_cap: float = DEFAULT_PROBE_CAP_SECONDS,
        rng: random.Random | None = None,
        on_transcript: Callable[[st.RecordingRow, dict[str, Any]], object] | None = None,
    ) -> None:
        self.spool = spool
        #: Called (on a worker thread) with each completed recording and its transcript.
        self.on_transcript = on_transcript
        self.client = client
        self.config = upload_config
        self.events = events if events is not None else spool.events
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self._rng = rng or random.Random()
        self._probe = Backoff(retry_limits(probe_base, probe_cap), self._rng)
        # The client's limits say how far a server's Retry-After is believed: one clamp.
        server_cap = client.gate.limits.retry_after_cap_seconds
        limits = retry_limits(retry_base, retry_cap, retry_after_cap_seconds=server_cap)
        self._retry = Backoff(limits, self._rng)
        self._upload_slots = asyncio.Semaphore(upload_config.concurrency)
        self._wake = asyncio.Event()
        self._online = asyncio.Event()
        self._online.set()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.probes = 0
        self._housekeeping: asyncio.Task[None] | None = None
        self._recovering: asyncio.Future[list[str]] | None = None
        self._housekeeping_at = 0.0  # monotonic time of the next pass

    # -- control ---------------------------------------------------------------

    def wake(self) -> None:
        """Look for work now (a recording became ready, a retry was requested)."""
        self._wake.set()

    @property
    def offline(self) -> bool:
        return not self._online.is_set()

    async def run(self) -> None:
        """Drain the spool forever (cancel to stop; in-flight steps resume after restart)."""
        try:
            while True:
                if self.offline:
                    await self._wait_for_network()
                    continue
                self._reap()
                await self._recover()  # first: what it finishes is due in this pass
                now = time.time()
                due, next_at = self._due(now)
                for row in due:
                    if len(self._tasks) >= MAX_TASKS:
                        break
                    self._tasks[row.id] = asyncio.create_task(self._process(row.id))
                self._start_housekeeping()
                timeout = IDLE_RESCAN_SECONDS if next_at is None else max(0.0, next_at - now)
                self._wake.clear()
                woken = asyncio.ensure_future(self._wake.wait())
                waiters = [woken, *self._tasks.values()]
                await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                woken.cancel()
        finally:
            for task in self._tasks.values():
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks.values(), return_exceptions=True)
            # A worker thread cannot be stopped: let its pass end before the spool closes.
            for work in (self._housekeeping, self._recovering):
                if work is not None:
                    await asyncio.gather(work, return_exceptions=True)

    async def _recover(self) -> None:
        """Finish rows a full disk kept from being finished, on a worker thread.

        Repairing segments and hashing a recording is file I/O that can take
        seconds on an SD card; the loop carries on capturing and streaming.
        """
        self._recovering = asyncio.ensure_future(asyncio.to_thread(self.spool.recover))
        with contextlib.suppress(Exception):
            await asyncio.shield(self._recovering)

    async def drain(self, timeout: float | None = None) -> None:
        """Run until nothing is pending or in flight (tests, ``appliance transcribe``)."""

        async def loop() -> None:
            task = asyncio.create_task(self.run())
            try:
                while True:
                    await asyncio.sleep(0.05)
                    if not self._tasks and not self.spool.store.all(st.PENDING_STATES):
                        return
                    if task.done():
                        task.result()
                        return
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        await asyncio.wait_for(loop(), timeout)

    def _start_housekeeping(self) -> None:
        """Expire old audio and forget old recordings off the loop, at most once an interval."""
        running = self._housekeeping is not None and not self._housekeeping.done()
        if running or time.monotonic() < self._housekeeping_at:
            return
        self._housekeeping_at = time.monotonic() + HOUSEKEEPING_INTERVAL_SECONDS
        self._housekeeping = asyncio.create_task(self._tidy(), name="spool-housekeeping")

    async def _tidy(self) -> None:
        try:
            await asyncio.to_thread(self.spool.housekeeping)
        except Exception:
            log.exception("spool housekeeping failed")

    def _reap(self) -> None:
        for rid, task in list(self._tasks.items()):
            if task.done():
                del self._tasks[rid]
                if not task.cancelled() and task.exception() is not None:
                    log.error("uploader step crashed: %r", task.exception())

    def _due(self, now: float) -> tuple[list[st.RecordingRow], float | None]:
        due, next_at = [], None
        for row in self.spool.store.all(st.PENDING_STATES):
            if row.id in self._tasks:
                continue
            if row.next_attempt_at <= now:
                due.append(row)
            else:
                next_at = (
                    row.next_attempt_at if next_at is None else min(next_at, row.next_attempt_at)
                )
        return due, next_at

    async def _wait_for_network(self) -> None:
        delay = self._probe.next_delay()
        await asyncio.sleep(delay)
        self.probes += 1
        try:
            await self.client.probe()
        except rest.Transient:
            return
        self._probe.reset()
        self._online.set()
        log.warning("network is back; resuming uploads")
        self._publish_state("idle", "network back")

    async def _reachable(self) -> bool:
        """After a transport error: is the server there at all (else we are offline)?"""
        try:
            await self.client.probe()
        except rest.Transient:
            return False
        return True

    def _went_offline(self, exc: Exception) -> None:
        if self._online.is_set():
            self._online.clear()
            log.warning("network down (%s); recordings are kept and sent when it returns", exc)
            self._publish_state("offline", "uploads waiting for the network")

    def _publish_state(self, state: ev.State, detail: str) -> None:
        if self.events:
            self.events.publish(ev.StateChanged(state=state, mode="upload", detail=detail))

    # -- one recording ---------------------------------------------------------

    async def _process(self, recording_id: str) -> None:
        with log_context(RECORDING_ID=recording_id):
            try:
                while True:
                    if self.offline:
                        await self._online.wait()
                    row = self.spool.store.get(recording_id)
                    if row is None or row.state not in st.PENDING_STATES:
                        return
                    if row.next_attempt_at > time.time():
                        return
                    await self._step(row)
            except _Offline:
                return
            finally:
                self.spool.publish_status()

    async def _step(self, row: st.RecordingRow) -> None:
        try:
            if row.state in (st.READY, st.UPLOADING):
                await self._upload(row)
            elif row.state == st.UPLOADED:
                await self._submit(row)
            elif row.state == st.SUBMITTING:
                await self._reconcile_submit(row)
            elif row.state == st.SUBMITTED:
                await self._complete(row)
        except rest.NetworkDown as exc:
            self._went_offline(exc)
            raise _Offline from None
        except rest.RateLimited as exc:
            wait = self._retry.delay_for(row.attempts, exc.retry_after)  # clamped, jittered
            log.info("rate limited; next try in %.1f s", wait)
            self.spool.store.update(row.id, next_attempt_at=time.time() + wait, last_error=str(exc))
        except rest.TranscriptError as exc:
            self._fail(row, str(exc), transcript_id=None)
        except rest.Permanent as exc:
            self._fail(row, str(exc))
        except rest.Transient as exc:
            if exc.status is None and not await self._reachable():
                self._went_offline(exc)
                raise _Offline from None
            attempts = row.attempts + 1
            if attempts >= self.config.max_attempts:
                self._fail(row, f"gave up after {attempts} attempts: {exc}", attempts=attempts)
                return
            wait = self._backoff(attempts)
            log.info("%s; attempt %d, next in %.1f s", exc, attempts, wait)
            self.spool.store.update(
                row.id, attempts=attempts, next_attempt_at=time.time() + wait, last_error=str(exc)
            )

    def _backoff(self, attempts: int) -> float:
        return self._retry.delay_for(attempts)

    def _fail(self, row: st.RecordingRow, reason: str, **fields: Unpack[st.Columns]) -> None:
        current = self.spool.store.get(row.id)
        if current is None or current.state not in st.PENDING_STATES:
            return
        log.error("recording %s failed: %s", row.id, reason)
        fields["last_error"] = reason[:500]
        self.spool.store.transition(row.id, current.state, st.FAILED, **fields)
        if self.events:
            self.events.publish(
                ev.ErrorReported(message=f"transcription failed: {reason}", where="upload")
            )

    # -- steps -----------------------------------------------------------------

    async def _upload(self, row: st.RecordingRow) -> None:
        known = self.spool.store.upload_url_for(row.content_hash or "")
        if known:
            self.spool.store.transition(
                row.id, (st.READY, st.UPLOADING), st.UPLOADED, upload_url=known
            )
            return
        if row.state == st.READY:
            self.spool.store.transition(row.id, st.READY, st.UPLOADING)
        _crashpoint("upload-start")
        async with self._upload_slots:
            known = self.spool.store.upload_url_for(row.content_hash or "")
            if known:  # a twin recording uploaded the same bytes while we waited
                self.spool.store.transition(row.id, st.UPLOADING, st.UPLOADED, upload_url=known)
                return
            size = self.spool.upload_size(row.id)
            reporter = _Progress(row.id, size, self.events)
            url = await self.client.upload(
                self.spool.upload_chunks(row.id, row.rate), size, reporter
            )
            reporter.done()
        _crashpoint("upload-answered")
        if row.content_hash:
            self.spool.store.remember_upload(row.content_hash, url)
        self.spool.store.transition(row.id, st.UPLOADING, st.UPLOADED, upload_url=url)
        log.info("uploaded %s (%d bytes)", row.id, size)

    async def _submit(self, row: st.RecordingRow) -> None:
        assert row.upload_url
        twin = self.spool.store.transcript_for(row.content_hash or "")
        if twin:  # identical audio already has a transcript: never pay for it twice
            self.spool.store.transition(row.id, st.UPLOADED, st.SUBMITTING)
            self._adopt(row, twin)
            return
        if row.content_hash and self.spool.store.submit_in_flight(row.content_hash, row.id):
            # A twin's submit is under way: its transcript will be adopted here once its id
            # is stored. No await between this check and our own SUBMITTING below, so two
            # twins in this loop can never both pass it.
            self.spool.store.update(row.id, next_attempt_at=time.time() + TWIN_WAIT_SECONDS)
            return
        body = rest.transcript_request(self.config, row.upload_url)
        self.spool.store.transition(row.id, st.UPLOADED, st.SUBMITTING)
        await self._mark_submit(row)
        _crashpoint("submit-start")
        try:
            answer = await self.client.submit(body)
        except rest.Permanent as exc:
            if not _refused(exc):
                raise self._unusable_answer(row, str(exc)) from None
            # The server said no: safe to submit again.
            self.spool.store.transition(row.id, st.SUBMITTING, st.UPLOADED)
            if exc.status in (400, 404, 410, 422):
                # The upload may have expired or be unusable: upload again on a manual retry.
                self.spool.store.forget_upload(row.content_hash or "")
                self._fail(row, str(exc), upload_url=None)
                return
            raise
        except (rest.NetworkDown, rest.RateLimited):
            # Not reached, or refused: safe to submit again.
            self.spool.store.transition(row.id, st.SUBMITTING, st.UPLOADED)
            raise
        except rest.Transient as exc:
            if exc.status is not None and exc.status >= 500:
                self.spool.store.transition(row.id, st.SUBMITTING, st.UPLOADED)
                raise
            # Sent but no answer: the outcome is unknown; reconcile before anything else.
            log.warning("submit of %s got no answer (%s); will reconcile", row.id, exc)
            raise
        _crashpoint("submit-answered")
        try:
            tid = check_transcript_id(answer.get("id"))
        except InvalidId as exc:
            raise self._unusable_answer(row, str(exc)) from None
        self._adopt(row, tid)

    async def _mark_submit(self, row: st.RecordingRow) -> None:
        """Leave proof on disk that a submit for this upload may reach the server."""
        marker = self.spool.submit_marker_path(row.id)
        data = json.dumps({"upload_url": row.upload_url, "at": time.time()})
        try:
            await asyncio.to_thread(write_durably, marker, data)
        except OSError as exc:  # the database still says so; only a rebuild would not know
            log.warning("cannot write the submit marker of %s: %s", row.id, exc.strerror)

    def _unusable_answer(self, row: st.RecordingRow, why: str) -> rest.Transient:
        """The server accepted the submit but its answer is unusable: like a lost answer."""
        log.warning("submit of %s was accepted but %s; will reconcile", row.id, why)
        return rest.Transient(f"submit answer unusable ({why}); reconciling")

    def _adopt(self, row: st.RecordingRow, transcript_id: object) -> None:
        try:
            tid = check_transcript_id(transcript_id)
        except InvalidId as exc:
            # The server has a transcript for this upload: never submit it again.
            self._fail(row, f"{exc}; 'appliance spool retry' reconciles again")
            return
        self.spool.store.transition(
            row.id, st.SUBMITTING, st.SUBMITTED, transcript_id=tid, attempts=0
        )
        log.info("submitted %s as transcript %s", row.id, tid)

    async def _reconcile_submit(self, row: st.RecordingRow) -> None:
        assert row.upload_url
        found = await self.client.find_transcripts(row.upload_url)
        if found is None:
            self._fail(
                row,
                f"{UNKNOWN_SUBMIT}: the server may have accepted it but cannot list transcripts; "
                "check and run 'appliance spool retry' to submit again",
            )
            return
        if found:
            if len(found) > 1:
                log.warning("%d transcripts exist for %s; using the first", len(found), row.id)
            usable = [tid for tid in found if _usable_id(tid)]
            chosen = usable[0] if usable else found[0]  # none usable: _adopt says so
            log.info("reconciled %s: server already has transcript %r", row.id, chosen[:80])
            self._adopt(row, chosen)
            return
        log.info("reconciled %s: no transcript on the server; submitting", row.id)
        self.spool.store.transition(row.id, st.SUBMITTING, st.UPLOADED)

    async def _complete(self, row: st.RecordingRow) -> None:
        assert row.transcript_id
        tid = check_transcript_id(row.transcript_id)
        data = await self.client.wait_for_completion(tid, self.config.poll_seconds)
        srt = await self.client.subtitles(tid, "srt")
        vtt = await self.client.subtitles(tid, "vtt")
        spool = self.spool
        await asyncio.to_thread(self._store_transcript, row.id, data, srt, vtt)
        _crashpoint("transcript-stored")
        if self.events:
            self.events.publish(
                ev.RecordingTranscript(
                    recording_id=row.id,
                    transcript_id=tid,
                    origin=row.origin,
                    text=str(data.get("text") or ""),
                    session_id=row.session_id,
                )
            )
        if self.on_transcript is not None:
            # Before the state changes: a crash here joins it again, and joining is
            # idempotent per recording.
            try:
                await asyncio.to_thread(self.on_transcript, row, data)
            except (
                Exception
            ) as exc:  # the transcript is stored; its subscriber's trouble is not ours
                log.error("transcript subscriber failed for %s: %r", row.id, exc)
        spool.store.transition(row.id, st.SUBMITTED, st.COMPLETED, completed_at=time.time())
        log.info("transcript of %s stored (%d characters)", row.id, len(data.get("text") or ""))

    def _store_transcript(
        self, recording_id: str, data: dict[str, Any], srt: str, vtt: str
    ) -> None:
        spool = self.spool
        write_durably(spool.artifact_path(recording_id, "json"), json.dumps(data, indent=1))
        write_durably(spool.artifact_path(recording_id, "srt"), srt)
        write_durably(spool.artifact_path(recording_id, "vtt"), vtt)


def _usable_id(value: object) -> bool:
    try:
        check_transcript_id(value)
    except InvalidId:
        return False
    return True


def _refused(exc: rest.RestError) -> bool:
    """Does this error prove the server did not accept the request (a 3xx/4xx answer)?"""
    return exc.status is not None and exc.status >= 300


class _Progress:
    """Logs and publishes upload progress every ~10 % or ~5 s, not per chunk."""

    def __init__(self, recording_id: str, total: int, events: ev.EventBus | None) -> None:
        self.recording_id = recording_id
        self.total = max(1, total)
        self.events = events
        self._next_fraction = PROGRESS_FRACTION
        self._next_time = time.monotonic() + PROGRESS_SECONDS
        self.reports = 0

    def __call__(self, sent: int, total: int) -> None:
        fraction = sent / self.total
        now = time.monotonic()
        if fraction < self._next_fraction and now < self._next_time:
            return
        while self._next_fraction <= fraction:
            self._next_fraction += PROGRESS_FRACTION
        self._next_time = now + PROGRESS_SECONDS
        self._report(sent)

    def _report(self, sent: int) -> None:
        self.reports += 1
        log.info("uploading %s: %d%%", self.recording_id, round(100 * sent / self.total))
        if self.events:
            self.events.publish(
                ev.UploadProgress(recording_id=self.recording_id, sent=sent, total=self.total)
            )

    def done(self) -> None:
        if self.events:
            self.events.publish(
                ev.UploadProgress(recording_id=self.recording_id, sent=self.total, total=self.total)
            )
