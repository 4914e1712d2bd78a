"""Wrong control tokens: a growing wait per client, and a bounded log under a scan."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re

import httpx
import pytest

from appliance.events import EventBus
from appliance.web import WebLimits
from appliance.web.throttle import RefusalLog, Summary, TokenThrottle
from tests.web.test_server import TOKEN, Daemon, base, started

# -- the bookkeeping, on a fake clock -----------------------------------------------


def throttle(**overrides: float) -> TokenThrottle:
    params = {"base_delay": 1.0, "max_delay": 60.0, "forget_after": 900.0, "max_clients": 4}
    return TokenThrottle(**{**params, **overrides})


def test_each_wrong_token_doubles_the_wait_up_to_the_cap() -> None:
    t = throttle()
    now, delays = 0.0, []
    for _ in range(9):
        assert t.wait("10.0.0.5", now) == 0.0  # it waited: the next token is checked
        delays.append(t.missed("10.0.0.5", now))
        now += delays[-1]
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_the_wait_counts_down_and_other_clients_are_not_held() -> None:
    t = throttle()
    t.missed("10.0.0.5", 100.0)
    t.missed("10.0.0.5", 101.0)  # second miss: 2 s
    assert t.wait("10.0.0.5", 101.5) == pytest.approx(1.5)
    assert t.wait("10.0.0.9", 101.5) == 0.0


def test_a_right_token_or_a_long_quiet_forgives_the_misses() -> None:
    t = throttle(forget_after=100.0)
    for now in (0.0, 1.0, 3.0):
        t.missed("a", now)
    t.passed("a")
    assert t.missed("a", 10.0) == 1.0
    assert t.missed("a", 11.0) == 2.0
    assert t.missed("a", 500.0) == 1.0  # quiet for longer than forget_after: a fresh start


def test_the_throttle_remembers_a_bounded_number_of_clients() -> None:
    t = throttle(max_clients=4)
    for i in range(1000):
        t.missed(f"10.0.{i // 256}.{i % 256}", float(i))
    assert len(t) == 4
    assert t.wait("10.0.3.231", 999.5) > 0  # the most recent are kept


def test_a_burst_is_logged_once_then_counted() -> None:
    log = RefusalLog(quiet_after=10.0, report_every=60.0, max_clients=8)
    assert log.refused("a", "wrong token", 0.0) is True
    assert [log.refused("a", "wrong token", 0.01 * i) for i in range(1, 2000)] == [False] * 1999
    assert log.refused("a", "no bearer token", 20.0) is True  # another reason: its own line
    assert log.due(15.0) == []  # still within the quiet time of the last one
    (summary,) = log.due(40.0)
    assert summary == Summary("a", "wrong token", 1999, pytest.approx(19.99), True)
    assert log.due(41.0) == []
    assert not log  # both bursts are over; the one-refusal burst needs no count
    assert log.refused("a", "wrong token", 42.0) is True  # a new burst


def test_a_long_burst_is_counted_every_report_interval() -> None:
    log = RefusalLog(quiet_after=10.0, report_every=60.0, max_clients=8)
    lines: list[Summary] = []
    now = 0.0
    while now < 200.0:
        log.refused("a", "wrong token", now)
        now += 0.5
        if now % 10 == 0:
            lines += log.due(now)
    lines += log.due(now + 20)
    assert [s.ended for s in lines] == [False, False, False, True]
    assert sum(s.count for s in lines) == 399  # every refusal but the first, counted once


def test_the_refusal_log_remembers_a_bounded_number_of_clients() -> None:
    log = RefusalLog(quiet_after=10.0, report_every=60.0, max_clients=8)
    for i in range(1000):
        log.refused(f"10.0.{i // 256}.{i % 256}", "wrong token", 0.0)
    assert len(log.flush()) == 0 and not log


# -- the server, on a real socket ----------------------------------------------------

FAST = WebLimits(
    token_miss_delay_s=0.5, token_miss_max_delay_s=5.0, refusal_quiet_s=0.3, refusal_report_s=30
)
#: A scan: the first wait outlasts it, so only its first token is ever compared.
SCAN = dataclasses.replace(FAST, token_miss_delay_s=30.0, token_miss_max_delay_s=60.0)


@pytest.fixture
def limits() -> WebLimits:
    return FAST


@pytest.fixture
async def guarded(tmp_path, limits):
    token_file = tmp_path / "control-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    daemon = Daemon()
    server = await started(EventBus(), daemon, controls=True, token_file=token_file, limits=limits)
    yield server, daemon
    await server.stop()


def client(server, local_address: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=local_address)
    return httpx.AsyncClient(base_url=base(server), transport=transport, timeout=2.0)


WRONG = {"Authorization": "Bearer not-the-token-0000"}
RIGHT = {"Authorization": f"Bearer {TOKEN}"}
URL = "/api/control/start_session"


@pytest.mark.parametrize("limits", [SCAN], ids=["scan"])
async def test_a_scan_of_wrong_tokens_is_slowed_and_logged_in_a_few_lines(guarded, caplog):
    server, daemon = guarded
    with caplog.at_level(logging.WARNING, logger="appliance.web"):
        async with client(server) as c:
            answers = [await c.post(URL, headers=WRONG) for _ in range(500)]
        statuses = [a.status_code for a in answers]
        assert statuses[0] == 401
        assert set(statuses[1:]) == {429}  # not one more token was compared
        assert 29 <= int(answers[1].headers["retry-after"]) <= 30
        assert daemon.controls == []
        await asyncio.sleep(FAST.refusal_quiet_s * 3)  # the burst ends: its count is logged
    lines = [r.getMessage() for r in caplog.records if r.name == "appliance.web.server"]
    first = r"refused web control 'start_session' from 127\.0\.0\.1:\d+: "
    assert re.fullmatch(first + "wrong token", lines[0]), lines
    assert re.fullmatch(first + "too many wrong tokens", lines[1]), lines
    # The rest are counted, not logged one by one: a summary per quiet spell (one, unless
    # the machine was so slow that the burst paused longer than the quiet period).
    summaries = [
        re.fullmatch(
            r"refused (\d+) more web control request\(s\) from 127\.0\.0\.1 in .*"
            r": too many wrong tokens",
            line,
        )
        for line in lines[2:]
    ]
    assert all(summaries) and 1 <= len(summaries) <= 10, lines
    assert sum(int(m.group(1)) for m in summaries if m) == 498
    assert "not-the-token" not in caplog.text and TOKEN not in caplog.text


async def test_the_wait_grows_with_each_miss_and_holds_the_right_token_too(guarded):
    server, daemon = guarded
    async with client(server) as c:
        assert (await c.post(URL, headers=WRONG)).status_code == 401
        await asyncio.sleep(0.6)  # past the first wait (0.5 s)
        assert (await c.post(URL, headers=WRONG)).status_code == 401
        await asyncio.sleep(0.6)  # not past the second (1 s)
        assert (await c.post(URL, headers=RIGHT)).status_code == 429
        await asyncio.sleep(0.5)
        assert (await c.post(URL, headers=RIGHT)).status_code == 200
        # The right token forgave the misses: the next miss waits the first delay again.
        assert (await c.post(URL, headers=WRONG)).status_code == 401
        await asyncio.sleep(0.6)
        assert (await c.post(URL, headers=RIGHT)).status_code == 200
    assert [action for action, _ in daemon.controls] == ["start_session", "start_session"]


async def test_another_client_is_not_held_by_a_guessers_wait(guarded):
    server, daemon = guarded
    async with client(server, "127.0.0.2") as guesser, client(server) as kiosk:
        for _ in range(5):
            await guesser.post(URL, headers=WRONG)
        assert (await guesser.post(URL, headers=RIGHT)).status_code == 429
        assert (await kiosk.post(URL, headers=RIGHT)).status_code == 200
    assert len(daemon.controls) == 1


async def test_requests_without_a_token_are_not_slowed_but_logged_in_bursts(guarded, caplog):
    server, _ = guarded
    with caplog.at_level(logging.WARNING, logger="appliance.web"):
        async with client(server) as c:
            statuses = {(await c.post(URL)).status_code for _ in range(50)}
        await server.stop()  # what is still counted is logged on the way out
    assert statuses == {401}
    lines = [r.getMessage() for r in caplog.records if r.name == "appliance.web.server"]
    assert len(lines) == 2 and lines[0].endswith(": no bearer token")
    assert lines[1].startswith("refused 49 more web control request(s) from 127.0.0.1 in ")
