"""Counters and a latency histogram, rendered in Prometheus' text exposition format.

Small on purpose: a handful of fixed series (tokens per kind, refusals per
reason, upstream errors, latency) and the fleet's gauges; no client library.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable

from appliance.broker.fleet import DeviceState

#: Upper bounds (seconds) of the token latency histogram's buckets.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self.minted: Counter[str] = Counter()  # by kind
        self.refused: Counter[str] = Counter()  # by reason
        self.upstream_errors: Counter[str] = Counter()  # by kind
        self.proxied: Counter[str] = Counter()  # pre-recorded proxy answers, by status
        self._bucket_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self._latency_sum = 0.0
        self._latency_count = 0

    def observe_latency(self, seconds: float) -> None:
        self._bucket_counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self._latency_sum += seconds
        self._latency_count += 1

    def render(self, devices: Iterable[DeviceState], now: float) -> str:
        lines: list[str] = []

        def family(name: str, kind: str, help_text: str) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")

        family("appliance_broker_tokens_minted_total", "counter", "Tokens handed to devices.")
        for kind in ("streaming", "agent"):
            lines.append(
                f'appliance_broker_tokens_minted_total{{kind="{kind}"}} {self.minted[kind]}'
            )
        family(
            "appliance_broker_refusals_total",
            "counter",
            "Requests refused, by reason (unauthorized, rate_limited, overloaded, "
            "upstream, bad_request, too_large).",
        )
        for reason, count in sorted(self.refused.items()):
            lines.append(f'appliance_broker_refusals_total{{reason="{_label(reason)}"}} {count}')
        family(
            "appliance_broker_upstream_errors_total",
            "counter",
            "Failed requests to AssemblyAI's token endpoints.",
        )
        for kind in ("streaming", "agent"):
            lines.append(
                f'appliance_broker_upstream_errors_total{{kind="{kind}"}} '
                f"{self.upstream_errors[kind]}"
            )
        family(
            "appliance_broker_rest_proxied_total",
            "counter",
            "Pre-recorded API requests passed through, by upstream status.",
        )
        for status, count in sorted(self.proxied.items()):
            lines.append(f'appliance_broker_rest_proxied_total{{status="{status}"}} {count}')
        family(
            "appliance_broker_token_request_seconds",
            "histogram",
            "Time to answer a token request (authentication, limits, minting).",
        )
        running = 0
        for bound, count in zip(LATENCY_BUCKETS, self._bucket_counts, strict=False):
            running += count
            lines.append(f'appliance_broker_token_request_seconds_bucket{{le="{bound}"}} {running}')
        lines.append(
            f'appliance_broker_token_request_seconds_bucket{{le="+Inf"}} {self._latency_count}'
        )
        lines.append(f"appliance_broker_token_request_seconds_sum {self._latency_sum:.6f}")
        lines.append(f"appliance_broker_token_request_seconds_count {self._latency_count}")

        devices = list(devices)
        family(
            "appliance_broker_device_last_seen_seconds",
            "gauge",
            "Seconds since each device last asked for a token.",
        )
        for d in devices:
            lines.append(
                f'appliance_broker_device_last_seen_seconds{{device="{d.name}"}} '
                f"{max(0.0, now - d.last_seen):.1f}"
            )
        family(
            "appliance_broker_device_spool_backlog",
            "gauge",
            "Recordings waiting on each device, as it last said.",
        )
        for d in devices:
            if d.spool_backlog is not None:
                lines.append(
                    f'appliance_broker_device_spool_backlog{{device="{d.name}"}} {d.spool_backlog}'
                )
        family(
            "appliance_broker_device_info",
            "gauge",
            "1 per device, labelled with its version and whether it reported an error.",
        )
        for d in devices:
            lines.append(
                f'appliance_broker_device_info{{device="{d.name}",'
                f'version="{_label(d.version or "")}",'
                f'error="{"1" if d.last_error else "0"}"}} 1'
            )
        return "\n".join(lines) + "\n"
