"""How clients come back after a failure: requests judged per product.

Every API request (token, WebSocket upgrade, REST call) is seen on arrival;
its outcome is reported when known. From that timeline the rules in
``rules.py`` decide: too soon after a failure, the same delay twice in a row
(no jitter), or before a Retry-After the emulator sent has run out.
Products are judged apart: ``streaming`` (/v3), ``agent`` (/v1), ``rest`` (/v2),
``llm`` (/v1/chat/, the LLM Gateway).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from appliance.emulator import rules
from appliance.emulator.config import EmulatorConfig
from appliance.emulator.violations import (
    IDENTICAL_RETRY_DELAYS,
    IGNORED_RETRY_AFTER,
    RETRY_TOO_SOON,
)

PRODUCT_PREFIXES = (
    ("/v3/", "streaming"),
    ("/v1/chat/", "llm"),  # the LLM Gateway, before the agent's /v1/
    ("/v1/", "agent"),
    ("/v2/", "rest"),
)

#: record(rule, product, detail, data) -> None
Recorder = Callable[[str, str, str, dict], None]


def product_of(path: str) -> str | None:
    """The product a request path belongs to, None outside the APIs."""
    for prefix, product in PRODUCT_PREFIXES:
        if path.startswith(prefix):
            return product
    return None


@dataclass
class _Timeline:
    """One product's recent history."""

    last_failure_at: float | None = None
    awaiting_retry: bool = False  # no request yet since the last failure
    delays: list[float] = field(default_factory=list)  # this failure run's retry delays
    not_before: float = 0.0  # the latest Retry-After deadline sent
    retry_after: str | None = None  # that header's text


class RetryJudge:
    """Judges each product's requests against the retry rules; records what breaks."""

    def __init__(self, config: EmulatorConfig, record: Recorder) -> None:
        self._config = config
        self._record = record
        self._timelines: dict[str, _Timeline] = {}

    def _timeline(self, product: str) -> _Timeline:
        return self._timelines.setdefault(product, _Timeline())

    def clear(self) -> None:
        self._timelines.clear()

    def on_request(self, product: str, path: str, now: float | None = None) -> None:
        """A request arrived: was it too soon, a jitter-free retry, or early?"""
        now = time.monotonic() if now is None else now
        tl = self._timeline(product)
        cfg = self._config
        if tl.last_failure_at is not None:
            since = now - tl.last_failure_at
            if rules.retry_too_soon(since, cfg.retry_min_gap_s):
                self._record(
                    RETRY_TOO_SOON,
                    product,
                    f"{path} {since * 1000:.1f} ms after a failed {product} request",
                    {"path": path, "since_failure_s": since},
                )
            if tl.awaiting_retry:
                tl.awaiting_retry = False
                tl.delays.append(since)
                run = cfg.identical_retry_delays_run
                del tl.delays[:-run]
                if rules.identical_retry_delays(
                    tl.delays,
                    run,
                    cfg.retry_delay_tolerance_s,
                    cfg.retry_delay_tolerance_fraction,
                ):
                    shown = ", ".join(f"{d * 1000:.1f}" for d in tl.delays)
                    self._record(
                        IDENTICAL_RETRY_DELAYS,
                        product,
                        f"{path}: retry delays {shown} ms (no jitter)",
                        {"path": path, "delays_s": list(tl.delays)},
                    )
        if rules.ignored_retry_after(now, tl.not_before):
            early = tl.not_before - now
            self._record(
                IGNORED_RETRY_AFTER,
                product,
                f"{path} {early:.3f} s before Retry-After: {tl.retry_after} ran out",
                {"path": path, "retry_after": tl.retry_after, "early_s": early},
            )

    def on_failure(
        self, product: str, retry_after: str | None = None, now: float | None = None
    ) -> None:
        """A request failed (error status, refused upgrade, reset connection)."""
        now = time.monotonic() if now is None else now
        tl = self._timeline(product)
        tl.last_failure_at = now
        tl.awaiting_retry = True
        if retry_after is not None:
            wait = rules.judged_retry_after(
                rules.retry_after_seconds(retry_after, time.time()),
                self._config.retry_after_judged_max_s,
            )
            if wait is not None and now + wait > tl.not_before:
                tl.not_before = now + wait
                tl.retry_after = retry_after

    def on_success(self, product: str) -> None:
        """A request succeeded: the failure run is over (its time still counts)."""
        tl = self._timeline(product)
        tl.awaiting_retry = False
        tl.delays.clear()
