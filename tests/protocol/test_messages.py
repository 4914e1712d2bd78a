"""No server message can end a session: one guard parses them all."""

from __future__ import annotations

import pytest

from appliance.protocol.messages import (
    MAX_LOGGED_CHARS,
    Rejected,
    describe_failure,
    excerpt,
    parse_message,
)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"type": "Turn", "words": [{"start": NaN}]}', "not valid JSON"),
        ('{"x": Infinity}', "not valid JSON"),
        ('{"x": -Infinity}', "not valid JSON"),
        ('{"x": 1e999}', "not valid JSON"),
        ("{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('"text"', "not a JSON object"),
    ],
)
def test_hostile_frames_are_rejected_with_a_short_reason(text: str | bytes, reason: str) -> None:
    result = parse_message(text)
    assert isinstance(result, Rejected)
    assert reason in result.reason
    assert len(result.reason) < 200


def test_an_oversize_frame_is_rejected_before_it_is_parsed() -> None:
    result = parse_message('{"x": "' + "a" * 2000 + '"}', max_bytes=1000)
    assert isinstance(result, Rejected) and "limit" in result.reason


def test_a_plain_object_is_parsed() -> None:
    assert parse_message('{"type": "Begin", "id": "x", "expires_at": 1.5}') == {
        "type": "Begin",
        "id": "x",
        "expires_at": 1.5,
    }


def test_server_text_in_a_log_line_is_cut_to_a_bounded_length() -> None:
    line = excerpt("x" * 1_000_000)
    assert len(line) < MAX_LOGGED_CHARS + 40 and line.endswith("(1000000 chars)")
    failure = describe_failure("T" * 1000, ValueError("v" * 100_000))
    assert len(failure) < 2 * MAX_LOGGED_CHARS + 100


def test_text_at_the_limit_is_kept_whole() -> None:
    assert excerpt("x" * MAX_LOGGED_CHARS) == "x" * MAX_LOGGED_CHARS
    assert excerpt(12345) == "12345"


def test_a_frame_of_exactly_the_limit_is_parsed() -> None:
    text = '{"x": "' + "a" * 91 + '"}'
    assert len(text) == 100
    assert parse_message(text, max_bytes=100) == {"x": "a" * 91}
