"""The outbox against a real HTTP receiver on loopback and a real command."""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from appliance.events import ErrorReported, EventBus, SessionPhase
from appliance.protocol.outbox import idempotency_key
from appliance.spool import store as st
from appliance.spool.uploader import Uploader
from appliance.spool_commands import spool_command
from appliance.web.snapshot import outbox_section
from tests.events import collect
from tests.spool.helpers import client_for, make_spool, record_digits, upload_config

from .helpers import SECRET, make_outbox, outbox_config, write_session

SESSION_ID = "ab12cd34ef560001"


def ended(session_id: str, spooled_samples: int = 0) -> SessionPhase:
    account = {"spooled_samples": spooled_samples}
    return SessionPhase(phase="ended", mode="live", session_id=session_id, account=account)


async def test_each_transcript_is_delivered_once_per_key_after_two_503s(
    tmp_path, emulator, receiver
):
    receiver.fail_first = [(503, {}), (503, {})]
    config = outbox_config(tmp_path, url=receiver.url)
    bus = EventBus()
    spool = make_spool(tmp_path)
    box = make_outbox(spool, config, bus)
    bus.add_callback(box.follow)
    write_session(config.state_path, SESSION_ID, ["hello there", "second turn"])
    bus.publish(ended(SESSION_ID))
    rid = record_digits(spool, "1 2 3")
    async with client_for(emulator) as client:
        uploader = Uploader(spool, client, upload_config(), on_transcript=box.recording_done)
        await uploader.drain(timeout=30)
    await box.drain(timeout=30)

    dest = box.destination.id
    keys = {
        "session": idempotency_key("session", SESSION_ID, dest),
        "recording": idempotency_key("recording", rid, dest),
    }
    assert set(receiver.accepted) == set(keys.values())
    for key in keys.values():
        assert receiver.posts_of(key) == 3
        bodies = {body for k, _auth, body in receiver.requests if k == key}
        assert len(bodies) == 1, "every attempt with one key sends the same bytes"
    assert {auth for _k, auth, _b in receiver.requests} == {SECRET}
    session = receiver.accepted[keys["session"]]
    assert (session["kind"], session["text"]) == ("session", "hello there second turn")
    recording = receiver.accepted[keys["recording"]]
    assert (recording["kind"], recording["text"]) == ("recording", "One two three.")
    assert recording["idempotency_key"] == keys["recording"]
    rows = spool.store.deliveries()
    assert {(r.state, r.attempts, r.payload) for r in rows} == {(st.DELIVERY_DELIVERED, 3, None)}

    # Queued again (a crash before "completed" runs the hook twice): nothing is sent again.
    assert not box.enqueue("recording", rid)
    await box.drain(timeout=10)
    assert len(receiver.requests) == 6


async def test_a_4xx_answer_fails_at_once_and_is_shown_as_refused(tmp_path, receiver):
    receiver.fail_first = [(422, {})]
    config = outbox_config(tmp_path, url=receiver.url)
    bus = EventBus()
    errors = collect(bus, ErrorReported)
    spool = make_spool(tmp_path)
    box = make_outbox(spool, config, bus)
    write_session(config.state_path, SESSION_ID, ["hello"])
    box.enqueue("session", SESSION_ID)
    await box.drain(timeout=10)

    assert len(receiver.requests) == 1 and not receiver.accepted
    (row,) = spool.store.deliveries()
    assert (row.state, row.attempts, row.last_error) == (st.DELIVERY_FAILED, 1, "refused: HTTP 422")
    assert errors and "refused: HTTP 422" in errors[-1].message
    shown = outbox_section(box)
    assert (shown["pending"], shown["delivered"], shown["failed"]) == (0, 0, 1)
    assert shown["items"][0]["state"] == "failed" and shown["destination"] == "url"

    spool_config = type(config)(spool=type(config.spool)(directory=spool.root))
    out = io.StringIO()
    spool_command(spool_config, argparse.Namespace(spool_command="list"), out)
    listing = out.getvalue()
    assert "session" in listing and "refused: HTTP 422" in listing
    assert "outbox: 0 pending, 0 delivered, 1 failed" in listing


async def test_408_429_and_5xx_are_retried_until_accepted(tmp_path, receiver):
    receiver.fail_first = [(408, {}), (429, {"Retry-After": "0"}), (500, {}), (502, {})]
    config = outbox_config(tmp_path, url=receiver.url)
    spool = make_spool(tmp_path)
    box = make_outbox(spool, config)
    write_session(config.state_path, SESSION_ID, ["hello"])
    box.enqueue("session", SESSION_ID)
    await box.drain(timeout=20)
    (row,) = spool.store.deliveries()
    assert (row.state, row.attempts) == (st.DELIVERY_DELIVERED, 5)
    assert len(receiver.accepted) == 1


async def test_a_command_gets_the_json_on_stdin_and_the_key_and_is_retried_on_failure(tmp_path):
    script = tmp_path / "deliver.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, pathlib, sys
            out = pathlib.Path(sys.argv[1])
            tries = out.with_name("tries")
            n = int(tries.read_text()) if tries.exists() else 0
            tries.write_text(str(n + 1))
            body = sys.stdin.read()
            if n == 0:
                sys.exit(3)
            with open(out, "a") as f:
                f.write(os.environ["APPLIANCE_IDEMPOTENCY_KEY"] + "\\t" + body + "\\n")
            """
        )
    )
    got = tmp_path / "got.txt"
    config = outbox_config(tmp_path, command=[sys.executable, str(script), str(got)])
    spool = make_spool(tmp_path)
    box = make_outbox(spool, config, secret=None)
    write_session(config.state_path, SESSION_ID, ["hello", "world"])
    box.enqueue("session", SESSION_ID)
    await box.drain(timeout=20)

    (row,) = spool.store.deliveries()
    assert (row.state, row.attempts) == (st.DELIVERY_DELIVERED, 2)
    (line,) = got.read_text().splitlines()
    key, body = line.split("\t", 1)
    assert key == idempotency_key("session", SESSION_ID, box.destination.id)
    assert json.loads(body)["text"] == "hello world"


async def test_a_command_that_runs_too_long_is_killed_and_counted(tmp_path):
    config = outbox_config(tmp_path, command=["sleep", "30"], timeout_seconds=1.0, max_attempts=1)
    spool = make_spool(tmp_path)
    box = make_outbox(spool, config, secret=None)
    write_session(config.state_path, SESSION_ID, ["hello"])
    box.enqueue("session", SESSION_ID)
    await box.drain(timeout=20)
    (row,) = spool.store.deliveries()
    assert row.state == st.DELIVERY_FAILED
    assert row.last_error == "gave up after 1 attempts: command did not finish within 1 s"


_CRASHING_RUN = """
import asyncio, sys
from pathlib import Path
from appliance.spool import Spool, SpoolParams
from tests.outbox.helpers import make_outbox, outbox_config

tmp, url, sid = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
spool = Spool(SpoolParams(directory=tmp / "spool", quota_bytes=50_000_000, min_free_bytes=0))
box = make_outbox(spool, outbox_config(tmp, url=url))
box.enqueue("session", sid)
asyncio.run(box.drain(timeout=20))
"""


async def test_a_crash_after_the_receiver_accepted_sends_again_with_the_same_key(
    tmp_path, receiver
):
    config = outbox_config(tmp_path, url=receiver.url)
    write_session(config.state_path, SESSION_ID, ["hello"])
    env = {**os.environ, "APPLIANCE_OUTBOX_CRASH_AT": "accepted"}
    crashed = subprocess.run(
        [sys.executable, "-c", _CRASHING_RUN, str(tmp_path), receiver.url, SESSION_ID],
        env=env,
        cwd=Path(__file__).parents[2],
        capture_output=True,
        timeout=60,
    )
    assert crashed.returncode == 137, crashed.stderr.decode()
    assert len(receiver.requests) == 1 and len(receiver.accepted) == 1

    spool = make_spool(tmp_path)
    (row,) = spool.store.deliveries()
    assert row.state == st.DELIVERY_PENDING, "the answer was never recorded"
    box = make_outbox(spool, config)
    await box.drain(timeout=20)

    key = idempotency_key("session", SESSION_ID, box.destination.id)
    assert [k for k, _a, _b in receiver.requests] == [key, key]
    assert receiver.requests[0][2] == receiver.requests[1][2], "the same body both times"
    assert list(receiver.accepted) == [key]
    assert spool.store.deliveries()[0].state == st.DELIVERY_DELIVERED


async def test_neither_the_url_nor_the_credential_is_logged_or_stored(tmp_path, receiver, caplog):
    caplog.set_level(logging.DEBUG, logger="appliance")
    receiver.fail_first = [(503, {}), (401, {})]
    config = outbox_config(tmp_path, url=receiver.url)
    spool = make_spool(tmp_path)
    box = make_outbox(spool, config)
    write_session(config.state_path, SESSION_ID, ["hello"])
    box.enqueue("session", SESSION_ID)
    await box.drain(timeout=10)
    with socket.socket() as s:  # a port nobody listens on: connection refused
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/hooks/s3cr3tpath"
    refused = outbox_config(tmp_path, url=closed, max_attempts=2)
    box = make_outbox(spool, refused)
    write_session(config.state_path, "ab12cd34ef560002", ["again"])
    box.enqueue("session", "ab12cd34ef560002")
    await box.drain(timeout=10)

    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "not delivered" in logged and "ConnectError" in logged
    for secret in (receiver.url, closed, "s3cr3tpath", SECRET, "tok-9f8e7d6c5b4a"):
        assert secret not in logged
        for name in ("spool.sqlite3", "spool.sqlite3-wal"):
            path = spool.root / name
            if path.exists():
                assert secret.encode() not in path.read_bytes()
