"""LLM Gateway chat completions as the reference documents them (no I/O).

``POST /v1/chat/completions`` with ``{"model", "messages", "max_tokens"}``,
the key raw in ``Authorization``. Model ids are exact, versioned strings: the
ones below are every id the reference names (``claude-sonnet-4`` alone is
not one). The EU host serves Anthropic's and Google's models only; OpenAI's,
Qwen's and Kimi's are US-only. The answer is read in the chat-completion form
(``choices[0].message.content``, ``finish_reason``): the reference shows the
request only, and the endpoint's name and request are those of that form.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

Provider = Literal["anthropic", "google", "openai", "moonshot", "qwen"]

#: Every model id the reference names, with its provider.
MODEL_PROVIDERS: dict[str, Provider] = {
    "claude-opus-4-7": "anthropic",
    "claude-sonnet-4-6": "anthropic",
    "claude-haiku-4-5-20251001": "anthropic",
    "gpt-5.2": "openai",
    "gpt-5.1": "openai",
    "gpt-4.1": "openai",
    "gemini-3.5-flash": "google",
    "gemini-2.5-pro": "google",
    "gemini-2.5-flash": "google",
    "gemini-2.5-flash-lite": "google",
    "kimi-k2.5": "moonshot",
    "qwen3-next-80b-a3b": "qwen",
}
MODELS: tuple[str, ...] = tuple(MODEL_PROVIDERS)
#: The providers the EU host serves ("Claude and Gemini only").
EU_PROVIDERS: frozenset[Provider] = frozenset({"anthropic", "google"})
PROVIDER_NAMES: dict[Provider, str] = {
    "anthropic": "Claude",
    "google": "Gemini",
    "openai": "OpenAI",
    "moonshot": "Kimi",
    "qwen": "Qwen",
}
US_HOST = "llm-gateway.assemblyai.com"
EU_HOST = "llm-gateway.eu.assemblyai.com"
CHAT_PATH = "/v1/chat/completions"


def region_refusal(model: str, eu: bool) -> str | None:
    """Why ``model`` cannot be used on this host, or None when it can."""
    provider = MODEL_PROVIDERS.get(model)
    if provider is None:
        return f"{model!r} is not a documented LLM Gateway model id"
    if eu and provider not in EU_PROVIDERS:
        name = PROVIDER_NAMES[provider]
        return (
            f"{model!r} ({name}) is not served by the EU LLM Gateway ({EU_HOST}): "
            "it serves Claude and Gemini models only (OpenAI, Qwen and Kimi are US-only)"
        )
    return None


def chat_request(
    model: str, instructions: str, transcript: str, max_tokens: int
) -> dict[str, object]:
    """The request body: the prompt as the system message, the transcript as the user's."""
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": instructions},
            {"role": "user", "content": transcript},
        ],
        "max_tokens": max_tokens,
    }


class UnusableAnswer(ValueError):
    """A 2xx answer that holds no completion (the request may still have been charged)."""


@dataclasses.dataclass(frozen=True)
class Completion:
    """What the gateway answered: the text, and whether ``max_tokens`` cut it short."""

    text: str
    truncated: bool
    completion_id: str | None


def read_completion(answer: object) -> Completion:
    """The first choice's message of a chat-completion answer; :class:`UnusableAnswer` if none."""
    if not isinstance(answer, dict):
        raise UnusableAnswer("the answer is not a JSON object")
    choices = answer.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise UnusableAnswer("the answer has no choices")
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str) or not content.strip():
        raise UnusableAnswer("the answer's first choice has no text")
    ident = answer.get("id")
    return Completion(
        text=content.strip(),
        truncated=choices[0].get("finish_reason") == "length",
        completion_id=ident[:100] if isinstance(ident, str) else None,
    )
