"""The API key and tokens never reach a log line, however they get there."""

from __future__ import annotations

import io
import logging

import pytest

from appliance.logs import RedactingFilter, log_context
from appliance.secrets import Secret, redact, register_secret

API_KEY = "sk-live-4f9a1c2b3d4e5f60718293a4b5c6d7e8"
TOKEN = "tmp-token-9e8d7c6b5a4f3e2d1c0b"


@pytest.fixture
def captured() -> tuple[logging.Logger, io.StringIO]:
    register_secret(Secret(API_KEY))
    register_secret(TOKEN)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("test.redaction")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream


def test_key_in_a_message_is_redacted(captured) -> None:
    logger, stream = captured
    logger.info("using key %s for %s", API_KEY, "streaming")
    assert API_KEY not in stream.getvalue()
    assert "using key *** for streaming" in stream.getvalue()


def test_key_in_an_exception_is_redacted(captured) -> None:
    logger, stream = captured
    try:
        raise RuntimeError(f"401 for Authorization: {API_KEY}")
    except RuntimeError:
        logger.exception("upload failed")
    text = stream.getvalue()
    assert API_KEY not in text
    assert "RuntimeError" in text and "upload failed" in text


def test_token_in_a_logged_url_is_redacted(captured) -> None:
    logger, stream = captured
    logger.warning("connect to wss://h/v3/ws?sample_rate=16000&token=%s failed", TOKEN)
    text = stream.getvalue()
    assert TOKEN not in text
    assert "sample_rate=16000&token=***" in text


def test_unregistered_token_in_a_url_is_still_redacted() -> None:
    # A token the redactor never saw (e.g. from a server answer) is caught by its field name.
    url = "ws://127.0.0.1:1/v3/ws?token=abc.def-ghi&sample_rate=16000"
    assert redact(url) == "ws://127.0.0.1:1/v3/ws?token=***&sample_rate=16000"


def test_authorization_header_value_is_redacted() -> None:
    text = redact("headers={'Authorization': 'Bearer unregistered-secret-value'}")
    assert "unregistered-secret-value" not in text


def test_secret_repr_and_str_hide_the_value() -> None:
    secret = Secret(API_KEY, source="file")
    assert API_KEY not in repr(secret) and API_KEY not in str(secret) and API_KEY not in f"{secret}"
    assert secret.reveal() == API_KEY


def test_journal_fields_are_attached_inside_a_log_context(captured) -> None:
    logger, _stream = captured
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keeper = Keep()
    keeper.addFilter(RedactingFilter())
    logger.addHandler(keeper)
    with log_context(SESSION_ID="s-1", MODE="live"):
        logger.info("turn")
    logger.info("outside")
    assert (records[0].SESSION_ID, records[0].MODE) == ("s-1", "live")
    assert not hasattr(records[1], "SESSION_ID")


def test_journal_records_carry_session_fields_and_no_secret() -> None:
    """Under systemd, records go to journald with SESSION_ID/MODE fields, redacted."""
    from appliance.logs import setup_logging

    register_secret(Secret(API_KEY))
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    sent: list[tuple[str, dict]] = []
    try:
        setup_logging("INFO", journal=True)
        (handler,) = root.handlers
        handler.send = lambda *args, **fields: sent.append((args[0], fields))
        with log_context(SESSION_ID="abc123", MODE="live"):
            try:
                raise ValueError(f"bad key {API_KEY}")
            except ValueError:
                logging.getLogger("appliance.test").exception("failed with %s", API_KEY)
    finally:
        root.handlers, level = saved
        root.setLevel(level)
    ((message, fields),) = sent
    assert API_KEY not in message and API_KEY not in repr(fields)
    assert fields["SESSION_ID"] == "abc123" and fields["MODE"] == "live"
    assert fields["PRIORITY"] == "3" and "ValueError" in fields["EXCEPTION_TEXT"]
