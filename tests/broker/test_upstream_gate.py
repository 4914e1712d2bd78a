"""After an upstream failure no request goes upstream until the backoff has passed."""

from __future__ import annotations

from appliance.broker.upstream import MAX_UPSTREAM_RETRY_AFTER, UpstreamGate


def test_the_backoff_doubles_per_failure_up_to_the_cap() -> None:
    gate = UpstreamGate(base=1.0, cap=5.0)
    now = 0.0
    delays = []
    for _ in range(5):
        delays.append(gate.failed(now))
        now += delays[-1]
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_the_gate_is_shut_until_the_backoff_ends_and_open_after_success() -> None:
    gate = UpstreamGate(base=2.0, cap=30.0)
    gate.failed(10.0)
    assert gate.wait(10.0) == 2.0 and gate.wait(11.5) == 0.5 and gate.wait(12.0) == 0.0
    gate.succeeded()
    assert gate.failures == 0 and gate.wait(12.0) == 0.0


def test_failures_of_requests_in_flight_together_count_once() -> None:
    gate = UpstreamGate(base=1.0, cap=30.0)
    assert gate.failed(0.0) == 1.0
    assert gate.failed(0.1) == 0.9  # the same outage, seen by a concurrent request
    assert gate.failures == 1


def test_a_server_retry_after_is_honoured_but_bounded() -> None:
    gate = UpstreamGate(base=1.0, cap=30.0)
    assert gate.failed(0.0, server_retry_after=20.0) == 20.0
    gate.succeeded()
    assert gate.failed(100.0, server_retry_after=1e9) == MAX_UPSTREAM_RETRY_AFTER
