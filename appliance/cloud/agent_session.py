"""The Voice Agent API's ``session.update`` body, built from the ``agent:`` settings.

Kept apart from the protocol core (:mod:`appliance.protocol.agent`), which takes
the finished body and knows nothing of the configuration.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from appliance.config import AgentConfig


def session_config(agent: AgentConfig, tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The ``session`` object of ``session.update``, from the ``agent:`` settings.

    Unset optional values are left out so the service's own defaults apply.
    ``tools`` are flat-schema definitions (``appliance.tools.ToolRunner.definitions``).
    """
    session: dict[str, Any] = {"system_prompt": agent.system_prompt}
    if agent.greeting:
        session["greeting"] = agent.greeting
    turn = {
        key: value
        for key, value in dataclasses.asdict(agent.turn_detection).items()
        if value is not None
    }
    session_input: dict[str, Any] = {"format": {"encoding": "audio/pcm"}}
    if agent.keyterms:
        session_input["keyterms"] = list(agent.keyterms)
    if turn:
        session_input["turn_detection"] = turn
    session["input"] = session_input
    output: dict[str, Any] = {"voice": agent.voice, "format": {"encoding": "audio/pcm"}}
    if agent.volume is not None:
        output["volume"] = agent.volume
    session["output"] = output
    if tools:
        session["tools"] = tools
    return session
