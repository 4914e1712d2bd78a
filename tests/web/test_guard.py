"""Who may read the page and who may press its buttons."""

from __future__ import annotations

import logging

import pytest

from appliance.secrets import Secret, redact
from appliance.web.guard import ControlGuard, Verdict, host_allowed, origin_allowed

TOKEN = "s3cret-control-token-123"


@pytest.mark.parametrize(
    "host_header", ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "LOCALHOST", "127.0.0.1"]
)
def test_loopback_names_are_accepted_when_bound_to_loopback(host_header):
    assert host_allowed(host_header, "127.0.0.1")


@pytest.mark.parametrize("host_header", ["evil.example:8080", "", None, "10.0.0.5:8080"])
def test_other_names_are_refused_when_bound_to_loopback(host_header):
    """A rebinding DNS name pointing at 127.0.0.1 must not read the captions."""
    assert not host_allowed(host_header, "127.0.0.1")


def test_the_bound_address_itself_is_accepted():
    assert host_allowed("192.168.1.20:8080", "192.168.1.20")
    assert not host_allowed("kiosk.evil:8080", "192.168.1.20")


def test_any_name_is_accepted_when_bound_to_all_interfaces():
    assert host_allowed("kiosk.local:8080", "0.0.0.0")


def test_feed_origin_must_match_the_host():
    assert origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080")
    assert not origin_allowed("http://evil.example", "127.0.0.1:8080")
    assert not origin_allowed("null", "127.0.0.1:8080")
    assert origin_allowed(None, "127.0.0.1:8080")  # not a browser page


def test_controls_off_refuse_even_the_right_token():
    guard = ControlGuard(False, Secret(TOKEN))
    assert guard.check(f"Bearer {TOKEN}") is Verdict.DISABLED


def test_right_token_is_allowed_and_wrong_or_missing_is_not():
    guard = ControlGuard(True, Secret(TOKEN))
    assert guard.check(f"Bearer {TOKEN}") is Verdict.ALLOWED
    assert guard.check(f"bearer  {TOKEN} ") is Verdict.ALLOWED
    assert guard.check(f"Bearer {TOKEN}x") is Verdict.WRONG
    assert guard.check("Bearer ") is Verdict.MISSING
    assert guard.check(f"Basic {TOKEN}") is Verdict.MISSING
    assert guard.check(None) is Verdict.MISSING


def test_token_is_read_from_its_file_and_registered_for_redaction(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    guard = ControlGuard.from_file(True, path)
    assert guard.check(f"Bearer {TOKEN}") is Verdict.ALLOWED
    assert TOKEN not in redact(f"header was {TOKEN}")


def test_unreadable_token_file_leaves_controls_refused(tmp_path, caplog):
    with caplog.at_level(logging.ERROR):
        guard = ControlGuard.from_file(True, tmp_path / "missing")
    assert guard.check(f"Bearer {TOKEN}") is Verdict.NOT_CONFIGURED
    assert "cannot read the control token file" in caplog.text


def test_empty_token_file_leaves_controls_refused(tmp_path):
    path = tmp_path / "token"
    path.write_text("\n")
    assert ControlGuard.from_file(True, path).check("Bearer ") is Verdict.NOT_CONFIGURED


def test_world_readable_token_file_is_warned_about(tmp_path, caplog):
    path = tmp_path / "token"
    path.write_text(TOKEN)
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        ControlGuard.from_file(True, path)
    assert "readable by others" in caplog.text
    assert TOKEN not in caplog.text
