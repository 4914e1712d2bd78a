"""The page's retune request: control arguments in, the live session's retune keywords out.

``POST /api/control/retune?keyterms=<JSON array>&min_turn_silence=<ms>&max_turn_silence=<ms>``:
every argument is optional (absent keeps the value). Key terms travel as a JSON
array of strings, the form the service itself takes, so a term may hold a comma.
Whether the values are acceptable is the session's call (``Tuning.problems``).
"""

from __future__ import annotations

import json
from typing import TypedDict

#: The query's whole size is bounded by the HTTP request line the server accepts.
KEYTERMS_ARG = "keyterms"
SILENCE_ARGS = ("min_turn_silence", "max_turn_silence")


class RetuneRequest(TypedDict, total=False):
    keyterms_prompt: list[str]
    min_turn_silence: int
    max_turn_silence: int


def retune_request(args: dict[str, str]) -> RetuneRequest:
    """The retune keywords in ``args``; ValueError (the page's 400) for a malformed one."""
    out: RetuneRequest = {}
    if KEYTERMS_ARG in args:
        try:
            terms = json.loads(args[KEYTERMS_ARG])
        except json.JSONDecodeError:
            raise ValueError("keyterms must be a JSON array of strings") from None
        if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
            raise ValueError("keyterms must be a JSON array of strings")
        out["keyterms_prompt"] = [t.strip() for t in terms]
    for name in SILENCE_ARGS:
        raw = args.get(name, "").strip()
        if raw:
            if not raw.isdigit():
                raise ValueError(f"{name} must be a whole number of ms")
            out[name] = int(raw)  # type: ignore[literal-required]
    if not out:
        raise ValueError("nothing to retune: give keyterms, min_turn_silence or max_turn_silence")
    return out
