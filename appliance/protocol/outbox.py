"""The outbox's rules, without I/O: what an attempt's answer means and when to try again.

A transcript goes to one destination (a URL or a command) at least once. An
attempt is judged by what came back:

* 2xx (or a command's exit status 0): delivered;
* 408, 429, 5xx, a timeout, a dropped or refused connection, a command that
  failed or ran out of time: tried again, after a full-jitter delay from
  :class:`~appliance.protocol.retry.Backoff` (never sooner than the floor,
  a ``Retry-After`` honoured and clamped), until ``max_attempts`` if set;
* any other answer (3xx, which is not followed, and 4xx): refused for good,
  shown as failed with its reason.

Every attempt of one transcript to one destination carries the same
idempotency key, derived from both, so a receiver can drop a repeat (a
crash between its answer and our record of it sends the same key again).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Literal

from appliance.protocol.retry import Backoff

Verdict = Literal["delivered", "retry", "refused"]
#: What an attempt leaves the delivery as.
Outcome = Literal["delivered", "pending", "failed"]
#: HTTP statuses in 4xx that mean "later", not "never".
RETRIED_CLIENT_ERRORS = frozenset({408, 429})


def http_verdict(status: int) -> Verdict:
    """What an HTTP answer's status means for the transcript sent."""
    if 200 <= status < 300:
        return "delivered"
    if status in RETRIED_CLIENT_ERRORS or status >= 500:
        return "retry"
    return "refused"


def destination_id(url: str | None, command: list[str] | tuple[str, ...]) -> str:
    """A digest naming the destination: stored and shown instead of the URL, which may hold
    a secret. The same URL or argv gives the same id, any change another."""
    where = {"url": url} if url is not None else {"command": list(command)}
    digest = hashlib.sha256(json.dumps(where, sort_keys=True).encode()).hexdigest()
    return digest[:16]


def idempotency_key(item_kind: str, item_id: str, destination: str) -> str:
    """The key every attempt of one transcript to one destination is sent with."""
    return f"appliance-{item_kind}-{item_id}-{destination}"


@dataclass(frozen=True)
class Attempt:
    """What one attempt came back with."""

    verdict: Verdict
    #: For people: "HTTP 503", "timed out after 30 s", "command exited with status 2".
    reason: str = ""
    #: The receiver's Retry-After in seconds (unclamped), if it sent one.
    retry_after: float | None = None


@dataclass(frozen=True)
class Step:
    """What to record after an attempt."""

    outcome: Outcome
    attempts: int
    next_attempt_at: float
    reason: str | None


def after_attempt(
    attempt: Attempt,
    attempts_before: int,
    now: float,
    backoff: Backoff,
    max_attempts: int | None,
) -> Step:
    """The delivery's next state; ``now`` and ``next_attempt_at`` are wall-clock seconds."""
    attempts = attempts_before + 1
    if attempt.verdict == "delivered":
        return Step("delivered", attempts, now, None)
    if attempt.verdict == "refused":
        return Step("failed", attempts, now, f"refused: {attempt.reason}")
    if max_attempts is not None and attempts >= max_attempts:
        return Step("failed", attempts, now, f"gave up after {attempts} attempts: {attempt.reason}")
    delay = backoff.delay_for(attempts_before, attempt.retry_after)
    return Step("pending", attempts, now + delay, attempt.reason)
