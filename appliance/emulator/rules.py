"""The client rules the emulator judges, each a small pure function of what it saw.

The server code decides *when* to ask (on each audio frame, request or
close); these functions only say whether the rule was broken, so each one is
pinned by a unit test of its own.
"""

from __future__ import annotations

import math
from email.utils import parsedate_to_datetime


def pacing_exceeded(
    received_s: float, elapsed_s: float, rate_allowance: float, max_lead_s: float
) -> bool:
    """Audio must not run ahead of wall time since the session began.

    Strictly read (``rate_allowance`` 1.0): a client may lead wall time by
    ``max_lead_s`` (one maximum-size frame), never more, however long the
    session. A larger allowance lets a backlog catch up faster than real time.
    """
    return received_s > elapsed_s * rate_allowance + max_lead_s


def retry_too_soon(since_failure_s: float, min_gap_s: float) -> bool:
    """A request of a product less than ``min_gap_s`` after a failed one hammers."""
    return since_failure_s < min_gap_s


def identical_retry_delays(
    delays_s: list[float], run: int, tolerance_s: float, tolerance_fraction: float
) -> bool:
    """The last ``run`` retry delays all within a tolerance of each other mean no jitter.

    One pair can coincide by chance for a jittered client (two draws from a
    100 ms range land within 1 ms about 2 % of the time); ``run`` of them in a
    row practically never do, while a fixed-delay client always does.
    """
    if len(delays_s) < run:
        return False
    recent = delays_s[-run:]
    return max(recent) - min(recent) <= tolerance_s + tolerance_fraction * max(recent)


def retry_after_seconds(value: str, now_wall: float) -> float | None:
    """The wait a ``Retry-After`` value asks for, or None if it asks for none.

    Delta seconds (any float text, including ``-5``, ``1e9``, ``inf``) or an
    HTTP date, read relative to ``now_wall`` (Unix seconds). Unparseable
    values, NaN and non-positive waits ask for nothing.
    """
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(text).timestamp() - now_wall
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if math.isnan(seconds) or seconds <= 0:
        return None
    return seconds


def judged_retry_after(wait_s: float | None, judged_max_s: float) -> float | None:
    """The part of a Retry-After wait a client is held to, or None.

    Clients clamp absurd values (``1e9``, ``inf``) to a cap of their own, so
    a wait above ``judged_max_s`` is not judged at all: honouring a clamped
    value is right, and the emulator cannot know the client's cap.
    """
    if wait_s is None or not math.isfinite(wait_s) or wait_s > judged_max_s:
        return None
    return wait_s


def ignored_retry_after(now: float, not_before: float) -> bool:
    """A request before the Retry-After the server sent has run out ignores it."""
    return now < not_before


def abandoned_session(established: bool, said_goodbye: bool, ended_by_client: bool) -> bool:
    """A session the client ended without ``Terminate`` / ``session.end`` was abandoned.

    Billing runs until the server sees the goodbye, so a session that began
    and then vanished from the client side (a close frame or a lost
    connection, for whatever reason) costs money. Closes the server made
    itself (errors, injected faults) are never the client's fault.
    """
    return established and not said_goodbye and ended_by_client
