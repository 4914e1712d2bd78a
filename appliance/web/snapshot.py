"""Building blocks of the status view's snapshot, so the daemon's ``status()`` stays short.

``from_events`` reads what the event bus last said (state, mode, session,
microphone level); the server puts it under whatever ``status()`` returns, so
the daemon only has to add what events do not carry (connection, spool).
``spool_section`` turns the spool into the rows the page shows, and
``spool_unavailable`` says why there is none; ``outbox_section`` shows what the
outbox delivered, is delivering and failed to deliver; ``summaries_section``
counts the summaries by state and names the failed ones a person can retry.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from appliance.events import EventBus, MicLevel, SessionPhase, StateChanged
from appliance.modes import MODES
from appliance.protocol.account import Account

DEFAULT_SPOOL_ROWS = 20
#: Recordings the page lists: everything not yet transcribed (done ones are history).
_SHOWN_STATES = ("recording", "ready", "uploading", "uploaded", "submitting", "submitted", "failed")


def from_events(bus: EventBus) -> dict[str, Any]:
    """State, mode, running session and level as the newest events tell them."""
    out: dict[str, Any] = {}
    state = bus.latest(StateChanged)
    if state is not None:
        out["state"] = state.event.state
        if state.event.mode in MODES:
            out["mode"] = state.event.mode
    session = bus.latest(SessionPhase)
    if session is not None:
        ended = session.event.phase == "ended"  # resumed or new_conversation: still running
        out["session"] = (
            None if ended else {"id": session.event.session_id, "mode": session.event.mode}
        )
    level = bus.latest(MicLevel)
    if level is not None:
        out["level_dbfs"] = level.event.dbfs
    return out


def spool_section(spool: Any, limit: int = DEFAULT_SPOOL_ROWS) -> dict[str, Any]:
    """``{"available", "notice", "waiting", "bytes", "full", "recordings": [{"id", "state",
    "bytes", "detail"}]}`` from an ``appliance.spool.Spool`` (its ``status()`` and
    ``newest()``), newest first. A spool that fails to answer is shown unavailable."""
    try:
        summary = spool.status()
        rows = spool.newest(_SHOWN_STATES, limit)  # newest first, read from the index
    except (sqlite3.Error, OSError) as exc:
        return spool_unavailable(f"cannot read the spool: {exc}")
    return {
        "available": True,
        "notice": summary.get("notice"),
        "waiting": summary.get("waiting", 0),
        "bytes": summary.get("bytes", 0),
        "full": getattr(spool, "full_reason", None) is not None,
        "recordings": [
            {
                "id": r.id,
                "state": r.state,
                "origin": r.origin,
                "bytes": r.data_bytes,
                "seconds": round(r.duration_seconds, 1),
                "detail": r.last_error or "",
            }
            for r in rows[:limit]
        ],
    }


def outbox_section(outbox: Any, limit: int = DEFAULT_SPOOL_ROWS) -> dict[str, Any]:
    """``{"destination", "pending", "delivered", "failed", "items": [{"kind", "id", "state",
    "attempts", "detail"}]}`` from an ``appliance.outbox.delivery.Outbox``, newest first
    (the destination only as "url" or "command": the URL may hold a secret)."""
    try:
        counts = outbox.store.delivery_counts()
        rows = outbox.store.deliveries(limit)
    except (sqlite3.Error, OSError) as exc:
        return {"available": False, "problem": f"cannot read the outbox: {exc}", "items": []}
    return {
        "available": True,
        "destination": outbox.destination.kind,
        "pending": counts.get("pending", 0),
        "delivered": counts.get("delivered", 0),
        "failed": counts.get("failed", 0),
        "items": [
            {
                "kind": r.item_kind,
                "id": r.item_id,
                "state": r.state,
                "attempts": r.attempts,
                "detail": r.last_error or "",
            }
            for r in rows
        ],
    }


def summaries_section(jobs: Any, limit: int = DEFAULT_SPOOL_ROWS) -> dict[str, Any]:
    """``{"available", "pending", "requesting", "completed", "failed", "skipped", "failed_items":
    [{"kind", "id", "attempts", "detail"}]}`` from an ``appliance.summary.jobs.SummaryJobs``
    (the failed ones newest first: they wait for ``appliance spool retry <id>``)."""
    try:
        counts = jobs.counts()
        failed = [j for j in jobs.newest(limit) if j.state == "failed"]
    except (sqlite3.Error, OSError) as exc:
        return summaries_unavailable(f"cannot read the summaries: {exc}")
    return {
        "available": True,
        **counts,
        "failed_items": [
            {
                "kind": j.source,
                "id": j.source_id,
                "attempts": j.attempts,
                "detail": j.last_error or "",
            }
            for j in failed
        ],
    }


def summaries_unavailable(problem: str) -> dict[str, Any]:
    """The summaries part of the page when they are enabled but none can be made, and why."""
    return {"available": False, "problem": problem, "failed_items": []}


def account_section(account: Account) -> dict[str, Any]:
    """The last session's account as the page shows it: where its audio went, in seconds."""
    s = account.seconds
    return {
        "mode": account.mode,
        "captured_seconds": round(s(account.captured_samples), 1),
        "delivered_seconds": round(s(account.delivered_samples), 1),
        "spooled_seconds": round(s(account.spooled_samples), 1),
        "skipped_seconds": round(s(account.skipped_samples), 1),
        "lost_seconds": round(s(account.lost_samples), 1),
        "stop_reason": account.stop_reason,
    }


def spool_unavailable(problem: str) -> dict[str, Any]:
    """The spool part of the page when there is no usable spool, and why."""
    return {"available": False, "problem": problem, "waiting": None, "recordings": []}
