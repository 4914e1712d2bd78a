"""Every limit of the broker, a named setting with its default, in one place."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Limits:
    """What the broker allows. Change one with ``dataclasses.replace(DEFAULT_LIMITS, ...)``."""

    #: Token requests one device may make per minute (a token bucket refilled at this rate).
    #: An idle device refreshes its kept token about twice a minute per kind.
    device_requests_per_minute: float = 30.0
    #: Requests a device may make at once before the per-minute rate applies.
    device_burst: int = 10
    #: Token requests the whole broker (one replica) accepts per second, from every device.
    overall_requests_per_second: float = 200.0
    #: Requests the whole broker accepts at once before its per-second rate applies.
    overall_burst: int = 400
    #: Largest request body accepted (token requests have none): past it, 413.
    max_body_bytes: int = 1024
    #: Largest total of request header names and values: past it, 431.
    max_header_bytes: int = 8192
    #: Longest check-in field (version, last error) kept; longer ones are cut.
    max_checkin_chars: int = 200
    #: ``expires_in_seconds`` of every minted token: how long it can be redeemed (1..600).
    token_expires_seconds: int = 60
    #: ``max_session_duration_seconds`` for a device enrolled without its own (60..10800).
    default_max_session_seconds: int = 3600
    #: Timeout of one request to AssemblyAI's token endpoint.
    upstream_timeout_seconds: float = 5.0
    #: After an upstream failure no request goes upstream for this long (doubling per
    #: consecutive failure, up to the cap); devices are told to come back then (503).
    upstream_backoff_seconds: float = 1.0
    upstream_backoff_cap_seconds: float = 30.0
    #: Requests to the pre-recorded proxy one device may make per minute (uploads, submits
    #: and polls), and at once.
    device_rest_requests_per_minute: float = 120.0
    device_rest_burst: int = 30
    #: Largest upload the pre-recorded proxy passes on (a field recording, WAV).
    max_upload_bytes: int = 2 * 1024**3
    #: Timeouts of the proxy's requests to the pre-recorded API (a slow link uploads long).
    rest_connect_timeout_seconds: float = 10.0
    rest_read_timeout_seconds: float = 60.0
    rest_write_timeout_seconds: float = 300.0
    #: Connections uvicorn serves at once; past it, 503 (the server's own cap).
    max_connections: int = 1000
    #: Devices' fleet entries kept (an enrolled device has one; the bound is for safety).
    max_fleet_entries: int = 100_000


DEFAULT_LIMITS = Limits()

#: The documented ranges of the two minting parameters.
EXPIRES_IN_RANGE = (1, 600)
MAX_SESSION_RANGE = (60, 10800)
