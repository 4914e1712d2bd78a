"""Tokens are scrubbed while they could be valid, at a cost flat in the number ever issued."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time

import httpx
import pytest

from appliance import secrets
from appliance.cloud.tokens import EXPIRES_IN_RANGE, BrokerTokens
from appliance.logs import RedactingFilter
from appliance.secrets import Secret, SecretRegistry, register_token, retire_secret

KEY = "sk-permanent-0123456789abcdef"


def token(i: int) -> str:
    return f"st_{i:048x}"


def test_a_token_is_scrubbed_until_it_expires() -> None:
    registry = SecretRegistry()
    registry.add_token(token(1), 60.0, now=0.0)
    registry.add_token(token(2), 60.0, now=59.9)
    assert token(1) not in registry.redact(f"connect ?token={token(1)} failed")
    registry.add_token(token(3), 60.0, now=60.0)
    assert registry.redact(token(1)) == token(1)
    assert registry.redact(token(2)) == "***"


def test_a_used_token_leaves_the_registry_and_a_permanent_secret_stays() -> None:
    registry = SecretRegistry()
    registry.add(KEY)
    registry.add_token(token(1), 600.0, now=0.0)
    registry.retire(token(1))
    assert registry.redact(f"{KEY} {token(1)}") == f"*** {token(1)}"
    for i in range(2, 1000):
        registry.add_token(token(i), 1.0, now=float(i))
    assert registry.redact(KEY) == "***"


def test_a_value_containing_another_is_scrubbed_whole() -> None:
    registry = SecretRegistry()
    registry.add_token("abcdefgh", 60.0, now=0.0)
    registry.add_token("abcdefgh-longer-token", 60.0, now=0.0)
    assert registry.redact("x abcdefgh-longer-token y") == "x *** y"


def test_past_the_bound_the_token_closest_to_expiry_is_dropped() -> None:
    registry = SecretRegistry(max_tokens=3)
    registry.add_token(token(1), 100.0, now=0.0)
    registry.add_token(token(2), 10.0, now=0.0)
    registry.add_token(token(3), 100.0, now=0.0)
    registry.add_token(token(4), 100.0, now=0.0)
    assert registry.redact(token(2)) == token(2)
    assert all(registry.redact(token(i)) == "***" for i in (1, 3, 4))
    assert registry.snapshot().evicted == 1


@pytest.mark.parametrize("retired", [False, True], ids=["expired", "used"])
def test_registration_work_is_flat_in_the_number_of_tokens_ever_issued(
    monkeypatch: pytest.MonkeyPatch, retired: bool
) -> None:
    compiles = 0
    real_compile = re.compile

    def counting_compile(*args: object, **kwargs: object) -> re.Pattern[str]:
        nonlocal compiles
        compiles += 1
        return real_compile(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(re, "compile", counting_compile)
    registry = SecretRegistry()
    lifetime = 60.0  # one token a second, each valid a minute: at most 61 at once
    work: list[int] = []
    sizes: list[int] = []
    for i in range(5000):
        before = registry.snapshot().scanned
        registry.add_token(token(i), lifetime, now=float(i))
        assert registry.redact(token(i)) == "***"
        if retired:
            registry.retire(token(i))
        stats = registry.snapshot()
        work.append(stats.scanned - before)
        sizes.append(stats.tokens)
    assert compiles == 0
    assert max(sizes) <= (1 if retired else 61)
    assert max(work) <= (1 if retired else 61)
    assert sum(work[-1000:]) <= sum(work[1000:2000])


def test_a_registered_token_never_reaches_a_log_line_or_exception_text() -> None:
    value = "ag_" + "5e" * 24
    register_token(value, 600.0)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test.secret_registry")
    logger.handlers = [handler]
    logger.propagate = False
    try:
        raise RuntimeError(f"upgrade refused for {value}")
    except RuntimeError:
        logger.exception("session with %s failed", value)
    assert value not in stream.getvalue() and "upgrade refused for ***" in stream.getvalue()
    retire_secret(value)
    assert secrets.redact(value) == value


def test_a_broker_token_is_scrubbed_for_the_longest_lifetime_the_api_allows() -> None:
    value = "br_" + "7c" * 24
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"token": value}))

    async def fetch() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            credential = Secret("device-credential")
            source = BrokerTokens("http://127.0.0.1:1/t", credential, client=client)
            await source.fetch()

    before = time.monotonic()
    asyncio.run(fetch())
    until = secrets._registry._tokens[value]
    assert until >= before + EXPIRES_IN_RANGE[1]  # not the 60 s the coordinator assumes
    retire_secret(value)
