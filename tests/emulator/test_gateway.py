"""LLM Gateway emulation: auth, the documented model ids, the request's shape, the answer."""

from __future__ import annotations

import httpx
import pytest

CHAT = "/v1/chat/completions"


@pytest.fixture
def client(emulator):
    with httpx.Client(
        base_url=emulator.http_url, headers={"Authorization": emulator.api_key}, timeout=10
    ) as c:
        yield c


def request(**overrides):
    body = {
        "model": "claude-sonnet-4-6",
        "messages": [
            {"role": "system", "content": "Summarise."},
            {"role": "user", "content": "One two three.\nFour five.\nHello there."},
        ],
        "max_tokens": 100,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def test_the_answer_is_the_digits_heard_as_bullets_then_action_items(client, emulator):
    answer = client.post(CHAT, json=request())
    assert answer.status_code == 200
    data = answer.json()
    choice = data["choices"][0]
    assert choice["message"] == {
        "role": "assistant",
        "content": "Summary:\n- 123\n- 45\n\nAction items:\n- none",
    }
    assert choice["finish_reason"] == "stop"
    assert data["model"] == "claude-sonnet-4-6"
    assert len(emulator.state.chat_completions) == 1


def test_max_tokens_cuts_the_answer_short_and_says_so(client):
    choice = client.post(CHAT, json=request(max_tokens=2)).json()["choices"][0]
    assert choice["finish_reason"] == "length"
    assert len(choice["message"]["content"].split(" ")) == 2


@pytest.mark.parametrize(
    "auth", [None, "Bearer {key}", "wrong"], ids=["missing", "bearer", "wrong"]
)
def test_the_key_goes_raw_in_authorization(emulator, auth):
    headers = {} if auth is None else {"Authorization": auth.format(key=emulator.api_key)}
    answer = httpx.post(emulator.http_url + CHAT, json=request(), headers=headers)
    assert answer.status_code == 401
    assert "error" in answer.json()
    assert emulator.state.chat_completions == []


@pytest.mark.parametrize("model", ["claude-sonnet-4", "gpt-5", "claude-3-5-sonnet", "", 7])
def test_a_model_id_the_reference_does_not_name_is_refused_with_an_error_object(client, model):
    answer = client.post(CHAT, json=request(model=model))
    assert answer.status_code == 400
    assert set(answer.json()) == {"error"}


@pytest.mark.parametrize(
    "change",
    [
        {"messages": []},
        {"messages": [{"role": "user"}]},
        {"messages": [{"role": "robot", "content": "hi"}]},
        {"messages": [{"role": "system", "content": "only a system message"}]},
        {"messages": [{"role": "user", "content": ""}]},
        {"messages": [{"role": "user", "content": "hi", "name": "x"}]},
        {"messages": None},  # neither messages nor prompt
        {"prompt": "both at once"},
        {"max_tokens": 0},
        {"max_tokens": "100"},
        {"max_tokens": True},
        {"temperature": 5},
        {"transcript_ids": ["abc"]},  # LeMUR's, not the gateway's
    ],
)
def test_a_malformed_request_is_refused(client, emulator, change):
    answer = client.post(CHAT, json=request(**change))
    assert answer.status_code == 400, answer.text
    assert isinstance(answer.json()["error"], str)
    assert emulator.state.chat_completions == []


def test_a_single_prompt_is_a_documented_request(client):
    body = {"model": "claude-sonnet-4-6", "prompt": "Say nine", "max_tokens": 50}
    answer = client.post(CHAT, json=body)
    assert answer.status_code == 200
    assert "- 9" in answer.json()["choices"][0]["message"]["content"]


def test_the_body_must_be_json(client):
    answer = client.post(CHAT, content=b"model=x", headers={"Content-Type": "text/plain"})
    assert answer.status_code == 400


def test_an_injected_failure_answers_before_the_gateway_does(client, emulator):
    emulator.fail_http(503, count=1, path_prefix=CHAT)
    assert client.post(CHAT, json=request()).status_code == 503
    assert client.post(CHAT, json=request()).status_code == 200
    assert len(emulator.state.chat_completions) == 1
