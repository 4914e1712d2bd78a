"""LLM Gateway ``POST /v1/chat/completions``, read strictly from the reference.

Written from the reference alone (agent instructions section 8 and the
chat-completion examples), independently of the daemon's reading:

* the key raw in ``Authorization`` (``Bearer`` -> 401, as the other REST APIs);
* ``Content-Type: application/json``, a JSON object of the documented fields
  only (``model``, ``messages`` or ``prompt``, ``max_tokens``, ``temperature``,
  ``response_format``);
* ``model`` one of the exact, versioned ids the reference names (shorthand
  such as ``claude-sonnet-4`` -> 400);
* ``messages`` a non-empty list of ``{"role", "content"}`` with a role of
  ``system``, ``user`` or ``assistant`` and text content, at least one ``user``;
* ``max_tokens`` a positive integer.

Errors are the APIs' documented shape, ``{"error": "<message>"}``. The answer
is deterministic, in the chat-completion form: the DTMF digits heard in the
user's text (the recogniser's words, ``one`` -> ``1``), one bullet per line
that has any, then "Action items" (none); ``max_tokens`` words at most
(``finish_reason: "length"`` when cut).
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from appliance.emulator.auth import REST_AUTH_ERROR, raw_key_ok

if TYPE_CHECKING:
    from appliance.emulator.server import EmulatorApp

#: Every model id the reference names (agent instructions section 8, API examples).
MODELS = frozenset(
    {
        "claude-opus-4-7",
        "claude-sonnet-4-6",
        "claude-haiku-4-5-20251001",
        "gpt-5.2",
        "gpt-5.1",
        "gpt-4.1",
        "gemini-3.5-flash",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "kimi-k2.5",
        "qwen3-next-80b-a3b",
    }
)
FIELDS = frozenset({"model", "messages", "prompt", "max_tokens", "temperature", "response_format"})
ROLES = frozenset({"system", "user", "assistant"})
CHAT_PATH = "/v1/chat/completions"
#: The recogniser's words for DTMF keys, back to the keys.
DIGIT_WORDS = {
    "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "star": "*", "pound": "#",
}  # fmt: skip
_WORD = re.compile(r"[a-z]+")
_ids = itertools.count(1)


def _emu(request: web.Request) -> EmulatorApp:
    from appliance.emulator.server import EMULATOR_KEY

    return request.app[EMULATOR_KEY]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def check_request(body: object) -> str | None:
    """What is wrong with a chat-completion request, or None."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object"
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        return f"Unknown field: {unknown[0]}"
    model = body.get("model")
    if not isinstance(model, str):
        return "model is required"
    if model not in MODELS:
        return f"Invalid model: {model!r} is not a supported model id"
    if ("messages" in body) == ("prompt" in body):
        return "Give either messages or prompt"
    if "prompt" in body and not (isinstance(body["prompt"], str) and body["prompt"].strip()):
        return "prompt must be a non-empty string"
    if "messages" in body:
        problem = _check_messages(body["messages"])
        if problem:
            return problem
    tokens = body.get("max_tokens")
    if "max_tokens" in body and (
        not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1
    ):
        return "max_tokens must be a positive integer"
    temperature = body.get("temperature")
    if "temperature" in body and not (
        isinstance(temperature, int | float)
        and not isinstance(temperature, bool)
        and math.isfinite(temperature)
        and 0 <= temperature <= 2
    ):
        return "temperature must be a number between 0 and 2"
    if "response_format" in body and not (
        isinstance(body["response_format"], dict)
        and isinstance(body["response_format"].get("type"), str)
    ):
        return "response_format must be an object with a type"
    return None


def _check_messages(messages: object) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty array"
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            return f"messages[{i}] must be an object with role and content"
        if message["role"] not in ROLES:
            return f"messages[{i}].role must be one of system, user, assistant"
        if not isinstance(message["content"], str) or not message["content"].strip():
            return f"messages[{i}].content must be a non-empty string"
    if not any(m["role"] == "user" for m in messages):
        return "messages must hold a user message"
    return None


def digits_summary(user_text: str) -> str:
    """The deterministic answer: the digits heard, a bullet per line that has any."""
    bullets = []
    for line in user_text.splitlines():
        keys = [DIGIT_WORDS[w] for w in _WORD.findall(line.lower()) if w in DIGIT_WORDS]
        if keys:
            bullets.append("- " + "".join(keys))
    heard = bullets or ["- no digits heard"]
    return "\n".join(["Summary:", *heard, "", "Action items:", "- none"])


async def chat_completions(request: web.Request) -> web.Response:
    emu = _emu(request)
    if not raw_key_ok(request, emu.config.api_keys):
        return web.json_response(REST_AUTH_ERROR, status=401)
    if request.content_type != "application/json":
        return _error(400, "Content-Type must be application/json")
    try:
        body = json.loads(await request.read())
    except ValueError:
        return _error(400, "The request body is not valid JSON")
    problem = check_request(body)
    if problem:
        emu.state.counters["chat_completions_refused"] += 1
        return _error(400, problem)
    if "messages" in body:
        user_text = "\n".join(m["content"] for m in body["messages"] if m["role"] == "user")
        prompt_words = sum(len(m["content"].split()) for m in body["messages"])
    else:
        user_text = body["prompt"]
        prompt_words = len(user_text.split())
    words = digits_summary(user_text).split(" ")
    limit = body.get("max_tokens")
    finish = "stop"
    if isinstance(limit, int) and len(words) > limit:
        words, finish = words[:limit], "length"
    content = " ".join(words)
    emu.state.chat_completions.append(body)
    answer: dict[str, Any] = {
        "id": f"chatcmpl-emu-{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_words,
            "completion_tokens": len(words),
            "total_tokens": prompt_words + len(words),
        },
    }
    return web.json_response(answer)


def add_gateway_routes(app: web.Application) -> None:
    app.router.add_post(CHAT_PATH, chat_completions)
