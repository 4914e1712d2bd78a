"""The record of every client rule broken, for tests to assert on.

Each entry names its rule, the product (``streaming``, ``agent`` or
``rest``), a human detail line, the monotonic time, the session id when there
is one, and rule-specific ``data`` so a test can tell, for example, an
abandoned session that sent a close frame from one whose connection died.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PACING = "pacing"
TOKEN_REUSE = "token_reuse"
RETRY_TOO_SOON = "retry_too_soon"
IDENTICAL_RETRY_DELAYS = "identical_retry_delays"
IGNORED_RETRY_AFTER = "ignored_retry_after"
ABANDONED = "abandoned"
#: Every rule judged, in the order the README lists them.
RULES = (
    PACING,
    TOKEN_REUSE,
    RETRY_TOO_SOON,
    IDENTICAL_RETRY_DELAYS,
    IGNORED_RETRY_AFTER,
    ABANDONED,
)


@dataclass(frozen=True)
class Violation:
    rule: str
    kind: str  # the product: "streaming", "agent" or "rest"
    detail: str
    time: float  # monotonic seconds
    session: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "kind": self.kind,
            "detail": self.detail,
            "time": self.time,
            "session": self.session,
            "data": dict(self.data),
        }


def count_by_rule(violations: list[Violation]) -> dict[str, int]:
    """How often each rule was broken, every rule present (0 when clean)."""
    counts = dict.fromkeys(RULES, 0)
    for violation in violations:
        counts[violation.rule] = counts.get(violation.rule, 0) + 1
    return counts
