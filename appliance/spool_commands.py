"""``appliance spool list|retry|purge`` and ``appliance transcribe FILE``.

The spool commands open the spool as a *viewer* (no lock, no recovery), so
they are safe while the daemon runs: they read rows and nudge states, and the
daemon's uploader picks the change up on its next scan. The summaries queued
in the same database (``appliance.summary.jobs``) are listed and retried here
too: ``retry <id>`` takes a recording id or a live session's id and asks again
for whatever of it failed (the recording, else its summary).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from appliance.cloud import rest
from appliance.exitcodes import ExitCode
from appliance.spool.ids import InvalidId
from appliance.spool.spool import Spool, SpoolError
from appliance.spool.store import (
    DELIVERY_PENDING,
    DELIVERY_STATES,
    DeliveryRow,
    RecordingRow,
)

if TYPE_CHECKING:
    from appliance.config import Config
    from appliance.summary.jobs import SummaryJob, SummaryJobs

T = TypeVar("T")

TRANSCRIBE_ATTEMPTS = 6
TRANSCRIBE_BACKOFF_CAP = 30.0
NOTE_WIDTH = 60


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return str(n)


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _columns(lines: Sequence[Sequence[str]]) -> str:
    """``lines`` (the header first) as left-aligned columns two spaces apart."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _queue_row(
    kind: str, item_id: str, state: str, pending: bool, row: DeliveryRow | SummaryJob, now: float
) -> tuple[str, ...]:
    """One line of a queue's table (the outbox's or the summaries'): when a pending item
    is tried next, then its last error."""
    note = row.last_error or ""
    if pending and row.next_attempt_at > now:
        note = f"next try in {_age(row.next_attempt_at - now)}; " + note
    return (kind, item_id, state, _age(now - row.created_at), str(row.attempts),
            note.rstrip("; ")[:NOTE_WIDTH])  # fmt: skip


def format_table(rows: list[RecordingRow], now: float | None = None) -> str:
    """The readable table of ``appliance spool list``."""
    now = time.time() if now is None else now
    header = ("ID", "ORIGIN", "STATE", "SIZE", "LENGTH", "AGE", "TRIES", "NOTE")
    lines = [header]
    for r in rows:
        note = r.last_error or ""
        if r.lost_samples:
            note = f"{r.lost_samples / r.rate:.1f}s lost; " + note
        if r.audio_deleted:
            note = "audio deleted; " + note
        lines.append(
            (
                r.id,
                r.origin,
                r.state,
                _size(r.data_bytes),
                f"{r.duration_seconds:.1f}s",
                _age(now - r.created_at),
                str(r.attempts),
                note[:NOTE_WIDTH],
            )
        )
    return _columns(lines)


def format_deliveries(rows: list[DeliveryRow], now: float | None = None) -> str:
    """The outbox's part of ``appliance spool list``: each transcript's delivery, newest first."""
    now = time.time() if now is None else now
    header = ("OUTBOX", "ID", "STATE", "AGE", "TRIES", "NOTE")
    lines: list[tuple[str, ...]] = [header]
    for r in rows:
        pending = r.state == DELIVERY_PENDING
        lines.append(_queue_row(r.item_kind, r.item_id, r.state, pending, r, now))
    return _columns(lines)


def format_summaries(rows: list[SummaryJob], now: float | None = None) -> str:
    """The summaries' part of ``appliance spool list``: each one's state, newest first."""
    from appliance.summary.jobs import PENDING

    now = time.time() if now is None else now
    header = ("SUMMARY", "ID", "STATE", "AGE", "TRIES", "NOTE")
    lines: list[tuple[str, ...]] = [header]
    for r in rows:
        lines.append(_queue_row(r.source, r.source_id, r.state, r.state == PENDING, r, now))
    return _columns(lines)


#: What ``spool retry`` says before asking again for a summary whose outcome is unknown.
CHARGED_TWICE_WARNING = (
    "its first request may have been answered (and charged) without the answer reaching "
    "the device: asking again may charge twice"
)


def spool_command(config: Config, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run one spool action; an unusable spool is a one-line message and exit 1."""
    out = out or sys.stdout
    try:
        spool = Spool(config, owner=False)
    except SpoolError as exc:
        print(f"spool unavailable: {exc}", file=sys.stderr)
        return ExitCode.FAILURE
    from appliance.summary.jobs import SummaryJobs

    summaries: SummaryJobs | None = None
    try:
        summaries = SummaryJobs.if_present(spool.store.path)
        return _spool_action(spool, summaries, args, out)
    except (sqlite3.Error, OSError, SpoolError) as exc:
        print(f"spool unavailable: {exc}", file=sys.stderr)
        return ExitCode.FAILURE
    finally:
        with contextlib.suppress(sqlite3.Error):
            if summaries is not None:
                summaries.close()
            spool.close()


def _spool_action(
    spool: Spool, summaries: SummaryJobs | None, args: argparse.Namespace, out: TextIO
) -> int:
    action = args.spool_command
    if action == "list":
        rows = spool.list()
        deliveries = spool.store.deliveries()
        jobs = summaries.newest() if summaries is not None else []
        if not rows and not deliveries and not jobs:
            print(f"the spool at {spool.root} is empty", file=out)
            return ExitCode.OK
        if rows:
            print(format_table(rows), file=out)
            status = spool.status()
            print(f"\n{status['waiting']} waiting, {_size(status['bytes'])} on disk", file=out)
        if deliveries:
            print(("\n" if rows else "") + format_deliveries(deliveries), file=out)
            counts = spool.store.delivery_counts()
            shown = ", ".join(f"{counts.get(s, 0)} {s}" for s in DELIVERY_STATES)
            print(f"\noutbox: {shown}", file=out)
        if jobs:
            assert summaries is not None
            print(("\n" if rows or deliveries else "") + format_summaries(jobs), file=out)
            counts = summaries.counts()
            print("\nsummaries: " + ", ".join(f"{n} {s}" for s, n in counts.items()), file=out)
        return ExitCode.OK
    if action == "retry":
        if args.all == bool(args.id):
            print("give a recording or session id, or --all (not both)", file=sys.stderr)
            return ExitCode.USAGE
        if args.all:
            ids = spool.retry_all()
            print(f"{len(ids)} recording(s) queued again", file=out)
            again = spool.store.retry_failed_deliveries()
            if again:
                print(f"{again} failed delivery(ies) queued again", file=out)
            if summaries is not None:
                _retry_failed_summaries(summaries, out)
            return ExitCode.OK
        return _retry_one(spool, summaries, args.id, out)
    if action == "purge":
        ids = spool.purge_completed()
        print(f"audio of {len(ids)} completed recording(s) deleted; transcripts kept", file=out)
        return ExitCode.OK
    print(f"unknown spool action {action!r}", file=sys.stderr)
    return ExitCode.USAGE


def _retry_one(spool: Spool, summaries: SummaryJobs | None, item_id: str, out: TextIO) -> int:
    """Retry what failed of one recording (itself, else its summary) or one session (its
    summary); an id that is not of our shape is a usage error before anything is read."""
    from appliance.history.archive import parse_id
    from appliance.summary.jobs import FAILED, UNKNOWN_OUTCOME

    try:
        kind, item_id = parse_id(item_id)
    except InvalidId as exc:
        print(str(exc), file=sys.stderr)
        return ExitCode.USAGE
    row = spool.get(item_id) if kind == "recording" else None
    if row is not None and spool.retry(row.id):
        print(f"{row.id} queued again", file=out)
        return ExitCode.OK
    job = summaries.get(kind, item_id) if summaries is not None else None
    if job is not None and job.state == FAILED:
        if (job.last_error or "").startswith(UNKNOWN_OUTCOME):
            print(f"the summary of {kind} {item_id}: {CHARGED_TWICE_WARNING}", file=out)
        if summaries is not None and summaries.retry(kind, item_id):
            print(f"the summary of {kind} {item_id} queued again", file=out)
            return ExitCode.OK
    if row is None and job is None:
        print(f"no {kind} {item_id} in the spool", file=sys.stderr)
        return ExitCode.FAILURE
    states = [f"{item_id} is {row.state}"] if row is not None else []
    if job is not None:
        states.append(f"its summary is {job.state}")
    print(f"{', '.join(states)}: nothing failed, nothing to retry", file=sys.stderr)
    return ExitCode.FAILURE


def _retry_failed_summaries(summaries: SummaryJobs, out: TextIO) -> None:
    """``retry --all``: failed summaries whose request was surely not taken are asked again;
    one whose outcome is unknown only by its id (it may be charged twice)."""
    from appliance.summary.jobs import FAILED, UNKNOWN_OUTCOME

    failed = summaries.in_states(FAILED)
    unknown = [j for j in failed if (j.last_error or "").startswith(UNKNOWN_OUTCOME)]
    again = sum(summaries.retry(j.source, j.source_id) for j in failed if j not in unknown)
    if again:
        print(f"{again} failed summary(ies) queued again", file=out)
    for j in unknown:
        print(
            f"the summary of {j.source} {j.source_id} has an unknown outcome, so --all leaves "
            f"it: 'appliance spool retry {j.source_id}' asks again ({CHARGED_TWICE_WARNING})",
            file=out,
        )


class _Bar:
    """A one-line progress bar on a terminal; silent otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()

    def __call__(self, sent: int, total: int) -> None:
        if not self.tty:
            return
        frac = sent / max(1, total)
        filled = round(30 * frac)
        self.stream.write(f"\rupload [{'#' * filled}{'.' * (30 - filled)}] {frac:4.0%}")
        self.stream.flush()

    def status(self, text: str) -> None:
        if self.tty:
            self.stream.write(f"\r{text:<50}")
            self.stream.flush()

    def end(self) -> None:
        if self.tty:
            self.stream.write("\r" + " " * 50 + "\r")
            self.stream.flush()


async def _with_retries(
    what: str, make: Callable[[], Awaitable[T]], bar: _Bar, *, idempotent: bool = True
) -> T:
    """Retry 429/5xx/unreachable; a non-idempotent call is not retried once it may have
    reached the server without an answer (a timeout after sending)."""
    rng = random.Random()
    for attempt in range(TRANSCRIBE_ATTEMPTS):
        try:
            return await make()
        except rest.RateLimited as exc:
            wait = exc.retry_after if exc.retry_after is not None else 2.0
        except rest.Transient as exc:
            unknown = exc.status is None and not exc.network
            if attempt == TRANSCRIBE_ATTEMPTS - 1 or (unknown and not idempotent):
                raise
            wait = rng.uniform(0, min(TRANSCRIBE_BACKOFF_CAP, 2.0 * 2**attempt))
        bar.status(f"{what}: retrying in {wait:.0f} s")
        await asyncio.sleep(wait)
    raise rest.Transient(f"{what}: gave up")


async def transcribe_file(config: Config, path: Path, progress: _Bar) -> dict[str, Any]:
    """Upload ``path`` (streamed), submit, wait; return the transcript JSON."""
    size = path.stat().st_size

    async def chunks() -> AsyncIterator[bytes]:
        with open(path, "rb") as f:
            while block := await asyncio.to_thread(f.read, 64 * 1024):
                yield block

    async with rest.RestClient.from_config(config) as client:
        url = await _with_retries(
            "upload", lambda: client.upload(chunks(), size, progress), progress
        )
        body = rest.transcript_request(config.upload, url)
        # A failed submit is only retried when the server said no (429/5xx/unreachable).
        answer = await _with_retries(
            "submit", lambda: client.submit(body), progress, idempotent=False
        )
        progress.status("transcribing…")
        tid = answer["id"]
        return await _with_retries(
            "poll", lambda: client.wait_for_completion(tid, config.upload.poll_seconds), progress
        )


def transcribe_command(config: Config, args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        print(f"no such file: {path}", file=sys.stderr)
        return ExitCode.USAGE
    bar = _Bar(sys.stderr)
    try:
        data = asyncio.run(transcribe_file(config, path, bar))
    except rest.RestError as exc:
        bar.end()
        print(f"transcription failed: {exc}", file=sys.stderr)
        return ExitCode.FAILURE
    bar.end()
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print(data.get("text") or "")
    return ExitCode.OK
