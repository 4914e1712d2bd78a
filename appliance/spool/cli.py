"""``appliance spool list|retry|purge`` and ``appliance transcribe FILE``.

The spool commands open the spool as a *viewer* (no lock, no recovery), so
they are safe while the daemon runs: they read rows and nudge states, and the
daemon's uploader picks the change up on its next scan.
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
from collections.abc import AsyncIterator, Awaitable, Callable
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
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def format_deliveries(rows: list[DeliveryRow], now: float | None = None) -> str:
    """The outbox's part of ``appliance spool list``: each transcript's delivery, newest first."""
    now = time.time() if now is None else now
    header = ("OUTBOX", "ID", "STATE", "AGE", "TRIES", "NOTE")
    lines = [header]
    for r in rows:
        note = r.last_error or ""
        if r.state == DELIVERY_PENDING and r.next_attempt_at > now:
            note = f"next try in {_age(r.next_attempt_at - now)}; " + note
        lines.append(
            (
                r.item_kind,
                r.item_id,
                r.state,
                _age(now - r.created_at),
                str(r.attempts),
                note.rstrip("; ")[:NOTE_WIDTH],
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def spool_command(config: Config, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run one spool action; an unusable spool is a one-line message and exit 1."""
    out = out or sys.stdout
    try:
        spool = Spool(config, owner=False)
    except SpoolError as exc:
        print(f"spool unavailable: {exc}", file=sys.stderr)
        return ExitCode.FAILURE
    try:
        return _spool_action(spool, args, out)
    except (sqlite3.Error, OSError, SpoolError) as exc:
        print(f"spool unavailable: {exc}", file=sys.stderr)
        return ExitCode.FAILURE
    finally:
        with contextlib.suppress(sqlite3.Error):
            spool.close()


def _spool_action(spool: Spool, args: argparse.Namespace, out: TextIO) -> int:
    action = args.spool_command
    if action == "list":
        rows = spool.list()
        deliveries = spool.store.deliveries()
        if not rows and not deliveries:
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
        return ExitCode.OK
    if action == "retry":
        if args.all == bool(args.id):
            print("give a recording id or --all (not both)", file=sys.stderr)
            return ExitCode.USAGE
        if args.all:
            ids = spool.retry_all()
            print(f"{len(ids)} recording(s) queued again", file=out)
            again = spool.store.retry_failed_deliveries()
            if again:
                print(f"{again} failed delivery(ies) queued again", file=out)
            return ExitCode.OK
        try:
            row = spool.get(args.id)
        except InvalidId as exc:
            print(str(exc), file=sys.stderr)
            return ExitCode.USAGE
        if row is None:
            print(f"no recording {args.id}", file=sys.stderr)
            return ExitCode.FAILURE
        if not spool.retry(row.id):
            print(f"{row.id} is {row.state}, not failed; nothing to retry", file=sys.stderr)
            return ExitCode.FAILURE
        print(f"{row.id} queued again", file=out)
        return ExitCode.OK
    if action == "purge":
        ids = spool.purge_completed()
        print(f"audio of {len(ids)} completed recording(s) deleted; transcripts kept", file=out)
        return ExitCode.OK
    print(f"unknown spool action {action!r}", file=sys.stderr)
    return ExitCode.USAGE


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
