"""The one account type every mode's session ends with."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from appliance.agent import ConversationAccount
from appliance.protocol.account import Account
from appliance.protocol.streaming import SessionAccount
from appliance.spool.recorder import RecordingAccount

DOC = Path(__file__).resolve().parents[1] / "docs" / "events.md"


def test_every_mode_returns_the_one_type():
    accounts = [
        SessionAccount(),
        ConversationAccount(rate=48_000),
        RecordingAccount(recording_id="r1", rate=48_000, start_index=0),
    ]
    assert [a.mode for a in accounts] == ["live", "agent", "record"]
    assert all(isinstance(a, Account) for a in accounts)


def test_the_balance_counts_all_four_destinations():
    acc = Account(mode="agent", rate=100, captured_samples=10, delivered_samples=4)
    acc.spooled_samples, acc.skipped_samples, acc.lost_samples = 3, 2, 0
    assert not acc.balanced
    acc.lost_samples = 1
    assert acc.balanced


def test_skipped_audio_moves_to_the_spool_or_to_lost_and_the_balance_holds():
    acc = Account(mode="agent", rate=100, captured_samples=10, delivered_samples=4)
    acc.skipped_samples = 6
    acc.spooled_from_skipped(kept=4, lost=1)
    assert (acc.spooled_samples, acc.skipped_samples, acc.lost_samples) == (4, 1, 1)
    acc.spooled_from_skipped(kept=50, lost=50)  # never more than was skipped
    assert (acc.spooled_samples, acc.skipped_samples, acc.lost_samples) == (5, 0, 1)
    assert acc.balanced


def test_the_json_form_keeps_each_modes_old_key_and_gives_seconds():
    live = SessionAccount(captured_samples=16_000, delivered_samples=16_000).as_dict()
    assert live["streamed_samples"] == live["delivered_samples"] == 16_000
    assert live["streamed_seconds"] == live["captured_seconds"] == 1.0
    agent = ConversationAccount(rate=48_000, delivered_samples=480).as_dict()
    assert agent["sent_samples"] == 480 and agent["mode"] == "agent"
    record = RecordingAccount(recording_id="r", rate=8000, start_index=0, delivered_samples=8)
    assert record.as_dict()["samples_written"] == record.samples_written == 8
    json.dumps([live, agent, record.as_dict()])  # plain JSON values only


def test_the_log_line_names_what_the_mode_calls_delivered():
    acc = ConversationAccount(rate=100, captured_samples=300, delivered_samples=100)
    acc.skipped_samples, acc.lost_samples, acc.stop_reason = 150, 50, "stop requested"
    line = acc.summary()
    assert line.startswith("captured 3.000 s = sent 1.000 s + spooled 0.000 s + skipped 1.500 s")
    assert line.endswith("; stop: stop requested")


def test_the_doc_page_lists_the_accounts_common_fields_in_order():
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## The account", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+)` \|", section, re.M)
    assert rows == [f.name for f in dataclasses.fields(Account)]


def test_the_status_page_shows_where_the_audio_went_in_seconds():
    from appliance.web.snapshot import account_section

    acc = SessionAccount(captured_samples=32_000, delivered_samples=24_000, spooled_samples=8000)
    assert account_section(acc) == {
        "mode": "live",
        "captured_seconds": 2.0,
        "delivered_seconds": 1.5,
        "spooled_seconds": 0.5,
        "skipped_seconds": 0.0,
        "lost_seconds": 0.0,
        "stop_reason": "",
    }
