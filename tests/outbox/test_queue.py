"""The outbox's queue in the spool database: the migration, a changed destination, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3

from appliance.events import EventBus, SessionPhase
from appliance.protocol.outbox import idempotency_key
from appliance.spool import store as st
from appliance.wiring import open_outbox
from tests.spool.helpers import make_spool, record_digits

from .helpers import make_outbox, outbox_config, write_session

SESSION_ID = "ab12cd34ef560001"


def test_an_older_database_gains_the_deliveries_table_and_keeps_its_rows(tmp_path):
    path = tmp_path / "spool.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE recordings (id TEXT PRIMARY KEY, origin TEXT NOT NULL, rate INTEGER NOT NULL,"
        " session_id TEXT, session_offset INTEGER, started_at REAL NOT NULL, created_at REAL NOT"
        " NULL, updated_at REAL NOT NULL, state TEXT NOT NULL, data_bytes INTEGER NOT NULL DEFAULT"
        " 0, lost_samples INTEGER NOT NULL DEFAULT 0, gaps TEXT NOT NULL DEFAULT '[]', content_hash"
        " TEXT, upload_url TEXT, transcript_id TEXT, attempts INTEGER NOT NULL DEFAULT 0,"
        " last_error TEXT, next_attempt_at REAL NOT NULL DEFAULT 0, completed_at REAL,"
        " audio_deleted INTEGER NOT NULL DEFAULT 0);"
        "INSERT INTO recordings (id, origin, rate, started_at, created_at, updated_at, state)"
        " VALUES ('20240101T000000Z-0badc0de', 'record', 16000, 1, 1, 1, 'failed');"
    )
    old.commit()
    old.close()
    store = st.Store(path)
    assert [r.id for r in store.all()] == ["20240101T000000Z-0badc0de"]
    assert store.add_delivery("session", SESSION_ID, "dest", "key")
    assert store.delivery_counts() == {"pending": 1}
    store.close()


def test_pending_deliveries_follow_a_changed_destination_with_its_key(tmp_path, receiver):
    spool = make_spool(tmp_path)
    spool.store.add_delivery("session", "s1", "olddest", "k-old-1")
    spool.store.add_delivery("session", "s2", "olddest", "k-old-2")
    spool.store.add_delivery("session", "s3", "olddest", "k-old-3")
    row = spool.store.delivery("session", "s3", "olddest")
    spool.store.update_delivery(row, "pending", state="delivered", delivered_at=1.0)
    spool.store.add_delivery("session", "s2", "newdest", "k-new-2")
    moved = spool.store.retarget_deliveries("newdest", lambda k, i: f"new-{k}-{i}")
    assert moved == 2
    got = {(r.item_id, r.destination, r.idempotency_key) for r in spool.store.deliveries()}
    assert got == {
        ("s1", "newdest", "new-session-s1"),
        ("s2", "newdest", "k-new-2"),  # queued there already: that row stays
        ("s3", "olddest", "k-old-3"),  # delivered: history stays as it was
    }


async def test_a_live_session_waits_for_its_spooled_gaps_before_it_is_sent(tmp_path, receiver):
    config = outbox_config(tmp_path, url=receiver.url)
    spool = make_spool(tmp_path)
    gap = record_digits(spool, "1", origin="live-gap", session_id=SESSION_ID, session_offset=0)
    write_session(config.state_path, SESSION_ID, ["hello"])
    box = make_outbox(spool, config)
    box.enqueue("session", SESSION_ID)
    await box._deliver(spool.store.due_deliveries(box.destination.id, 1e12, 10)[0][0])
    (row,) = spool.store.deliveries()
    assert (row.state, row.attempts, row.payload) == ("pending", 0, None)
    assert not receiver.requests, "nothing is sent while a gap may still join the session"
    spool.store.update(gap, state=st.COMPLETED)  # transcribed: it has joined the session
    spool.store.update_delivery(row, "pending", next_attempt_at=0)
    await box.drain(timeout=10)
    assert spool.store.deliveries()[0].state == "delivered" and len(receiver.accepted) == 1


async def test_the_daemon_wiring_queues_an_ended_live_session_and_delivers_it(tmp_path, receiver):
    config = outbox_config(tmp_path, url=receiver.url)
    spool = make_spool(tmp_path)
    bus = EventBus()
    write_session(config.state_path, SESSION_ID, ["hello", "there"])
    async with contextlib.AsyncExitStack() as stack:
        box = open_outbox(config, bus, spool, None, stack)
        assert box is not None
        bus.publish(SessionPhase(phase="ended", mode="live", session_id=SESSION_ID))
        bus.publish(SessionPhase(phase="ended", mode="agent", session_id="ab12cd34ef560002"))
        async with asyncio.timeout(10):
            while spool.store.delivery_counts().get("delivered", 0) < 1:
                await asyncio.sleep(0.05)
    key = idempotency_key("session", SESSION_ID, box.destination.id)
    assert list(receiver.accepted) == [key] and len(receiver.requests) == 1
    assert receiver.accepted[key]["text"] == "hello there"
