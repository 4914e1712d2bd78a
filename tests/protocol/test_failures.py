"""Every way a connection attempt fails has one name, for live and agent alike."""

from __future__ import annotations

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from appliance.cloud.tokens import TokenAuthError, TokenError, TokenTransientError
from appliance.connection.websocket import failure_from
from appliance.protocol.failures import ConnectFailure


def upgrade_refused(status: int, retry_after: str | None = None) -> InvalidStatus:
    headers = Headers()
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    return InvalidStatus(Response(status, "refused", headers, b""))


@pytest.mark.parametrize(
    ("exc", "kind", "retry_after"),
    [
        (TokenAuthError("HTTP 401", 401), ConnectFailure.AUTH, None),
        (TokenTransientError("HTTP 429", 429, 3.0), ConnectFailure.RATE_LIMITED, 3.0),
        (TokenTransientError("HTTP 503", 503, 2.0), ConnectFailure.NETWORK, 2.0),
        (TokenTransientError("timed out"), ConnectFailure.NETWORK, None),
        (TokenError("HTTP 400"), ConnectFailure.FATAL, None),
        (upgrade_refused(429, "7"), ConnectFailure.RATE_LIMITED, 7.0),
        (upgrade_refused(429, "-5"), ConnectFailure.RATE_LIMITED, -5.0),
        (upgrade_refused(503, "4"), ConnectFailure.NETWORK, 4.0),
        (upgrade_refused(401), ConnectFailure.AUTH, None),
        (upgrade_refused(410), ConnectFailure.FATAL, None),
        (ConnectionRefusedError(111, "refused"), ConnectFailure.NETWORK, None),
        (TimeoutError(), ConnectFailure.NETWORK, None),
    ],
)
def test_each_failure_is_classified_once(
    exc: BaseException, kind: ConnectFailure, retry_after: float | None
) -> None:
    failure = failure_from(exc)
    assert failure.kind is kind
    assert failure.retry_after == retry_after
    assert failure.detail
