"""``appliance sessions list|show|export``: past sessions and recordings from a shell.

Read-only and safe while the daemon runs (the spool is opened as a viewer).
An id that is not one of ours is a usage error before anything is opened.
Building the parser imports nothing but the export formats; the archive is
imported when the command runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from appliance.exitcodes import ExitCode
from appliance.transcripts import exports

if TYPE_CHECKING:
    from appliance.config import Config
    from appliance.history.archive import Archive, Entry


def add_arguments(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The actions under ``appliance sessions``; returns them (for the shared options)."""
    sub = parser.add_subparsers(dest="sessions_command", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="sessions and recordings, newest first")
    listing.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    listing.add_argument("--json", action="store_true", help="as JSON lines")
    show = sub.add_parser("show", help="one session or recording: facts, summary, transcript")
    show.add_argument("id", help="session or recording id (from 'sessions list')")
    export = sub.add_parser("export", help="write one session or recording as a file")
    export.add_argument("id", help="session or recording id")
    export.add_argument(
        "--format", "-f", choices=exports.FORMATS, default="txt", help="default txt"
    )
    export.add_argument(
        "--output", "-o", metavar="FILE", help="write here (mode 0600) instead of stdout"
    )
    return [listing, show, export]


def _when(stamp: float | None) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp))


def format_entries(entries: list[Entry]) -> str:
    """The table of ``appliance sessions list``."""
    rows = [("ID", "KIND", "STARTED", "STATE", "LENGTH", "AUDIO")]
    for e in entries:
        length = "-" if e.duration_seconds is None else f"{e.duration_seconds:.1f}s"
        kind = e.kind if e.origin in (None, "record") else f"{e.kind} ({e.origin})"
        rows.append((e.id, kind, _when(e.started_at), e.state, length, "yes" if e.audio else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def sessions_command(config: Config, args: argparse.Namespace, out: TextIO | None = None) -> int:
    from appliance.history.archive import Archive

    return run(Archive.from_config(config), args, out or sys.stdout)


def run(archive: Archive, args: argparse.Namespace, out: TextIO) -> int:
    """One action on ``archive``; bad ids exit 2, unknown ones 1."""
    from appliance.history.archive import NotFound, parse_id
    from appliance.spool.ids import InvalidId

    action = args.sessions_command
    try:
        if action == "list":
            entries = archive.entries(max(1, args.limit))
            if args.json:
                for e in entries:
                    print(json.dumps(e.__dict__), file=out)
            elif entries:
                print(format_entries(entries), file=out)
            else:
                print(f"no sessions or recordings under {archive.state_dir}", file=out)
            return ExitCode.OK
        parse_id(args.id)
        if action == "show":
            entry = archive.entry(args.id)
            print(exports.to_markdown(archive.transcript(args.id)), end="", file=out)
            if entry.audio:
                print(f"\n(audio kept in the spool: {entry.id})", file=out)
            return ExitCode.OK
        if action == "export":
            name, text = archive.export(args.id, args.format)
            if args.output:
                _write_private(Path(args.output), text)
                print(f"{name} written to {args.output}", file=sys.stderr)
            else:
                out.write(text)
            return ExitCode.OK
    except InvalidId as exc:
        print(str(exc), file=sys.stderr)
        return ExitCode.USAGE
    except NotFound as exc:
        print(str(exc), file=sys.stderr)
        return ExitCode.FAILURE
    except (OSError, sqlite3.Error) as exc:
        print(f"history unavailable: {exc}", file=sys.stderr)
        return ExitCode.FAILURE
    print(f"unknown sessions action {action!r}", file=sys.stderr)
    return ExitCode.USAGE


def _write_private(path: Path, text: str) -> None:
    """A transcript is private: the file is created 0600 (an existing one keeps its mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as f:
        f.write(text)
