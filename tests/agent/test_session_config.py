"""The ``session.update`` body the daemon builds from its ``agent:`` settings."""

from __future__ import annotations

from appliance.cloud.agent_session import session_config
from appliance.config import AgentConfig, ToolConfig, TurnDetectionConfig


def test_session_config_has_the_documented_shape():
    agent = AgentConfig(
        system_prompt="Be brief.",
        greeting="Hello",
        voice="james",
        volume=80,
        keyterms=["Pi"],
        turn_detection=TurnDetectionConfig(vad_threshold=0.4, max_silence=900),
    )
    tools = [{"type": "function", "name": "t", "description": "d", "parameters": {}}]
    session = session_config(agent, tools)
    assert session == {
        "system_prompt": "Be brief.",
        "greeting": "Hello",
        "input": {
            "format": {"encoding": "audio/pcm"},
            "keyterms": ["Pi"],
            "turn_detection": {"vad_threshold": 0.4, "max_silence": 900},
        },
        "output": {"voice": "james", "format": {"encoding": "audio/pcm"}, "volume": 80},
        "tools": tools,
    }


def test_session_config_leaves_unset_options_to_the_service():
    session = session_config(AgentConfig(greeting=None))
    assert "greeting" not in session
    assert "tools" not in session
    assert "turn_detection" not in session["input"]
    assert "volume" not in session["output"]


def test_tools_from_config_are_flat():
    from appliance.tools import ToolRunner

    runner = ToolRunner(
        [
            ToolConfig(
                name="lights",
                description="switch lights",
                parameters={"type": "object", "properties": {"on": {"type": "boolean"}}},
                kind="command",
                command=["true"],
            )
        ]
    )
    (definition,) = runner.definitions()
    assert definition == {
        "type": "function",
        "name": "lights",
        "description": "switch lights",
        "parameters": {"type": "object", "properties": {"on": {"type": "boolean"}}},
    }
    assert "function" not in definition  # not the nested OpenAI form
