"""Each default has one home: the part that uses it; the settings refer to it."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from appliance.config import (
    AgentConfig,
    Config,
    ConfigError,
    ReconnectConfig,
    SpoolConfig,
    agent_limits,
    load_config,
    streaming_limits,
)
from appliance.connection.tokens import DEFAULT_AUTH_RETRY_SECONDS
from appliance.protocol.agent import DEFAULT_AGENT_LIMITS, AgentProtocol, Echo
from appliance.protocol.policy import DEFAULT_RECONNECT_LIMITS
from appliance.protocol.streaming import STREAM_RATE, StreamingLimits
from appliance.spool import SpoolParams


def test_default_settings_convert_into_the_parts_own_defaults():
    config = Config()
    history = 10.0
    limits = streaming_limits(config.live, config.reconnect, history)
    expected = StreamingLimits(
        history_samples=int(history * STREAM_RATE), history_margin_samples=2 * STREAM_RATE
    )
    assert limits == expected  # every other field is the core's own default
    assert agent_limits(AgentConfig()) == DEFAULT_AGENT_LIMITS


def test_reconnect_and_auth_retry_come_from_the_reconnect_policy():
    rc = ReconnectConfig()
    assert rc.base_seconds == DEFAULT_RECONNECT_LIMITS.retry.base_seconds
    assert rc.max_seconds == DEFAULT_RECONNECT_LIMITS.retry.cap_seconds
    assert rc.auth_retry_seconds == DEFAULT_RECONNECT_LIMITS.slow_retry_seconds
    assert DEFAULT_RECONNECT_LIMITS.slow_retry_seconds == DEFAULT_AUTH_RETRY_SECONDS


def test_spool_params_default_to_the_spool_settings():
    params, sc = SpoolParams(Path("/spool")), SpoolConfig()
    for name in ("quota_bytes", "min_free_bytes", "segment_seconds", "sync_interval_seconds"):
        assert getattr(params, name) == getattr(sc, name), name
    assert params.retention_days == sc.retention_days


def test_agent_echo_is_a_literal_whose_values_are_the_settings_choices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    hint = typing.get_type_hints(AgentConfig)["echo"]
    assert hint == Echo and typing.get_args(Echo) == ("half_duplex", "full_duplex")
    field = next(f for f in dataclasses.fields(AgentConfig) if f.name == "echo")
    assert field.metadata["appliance_setting"].choices == typing.get_args(Echo)
    hints = typing.get_type_hints(AgentProtocol.__init__)
    assert hints["echo"] == Echo  # the core relies on the type: no check of its own
    monkeypatch.setenv("ASSEMBLYAI_API_KEY", "k" * 32)
    path = tmp_path / "config.yaml"
    path.write_text("agent:\n  echo: full_duplex\n")
    assert load_config(path).agent.echo == "full_duplex"
    path.write_text("agent:\n  echo: half\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [p.key for p in info.value.problems] == ["agent.echo"]


def test_live_sample_rate_is_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The stream's rate is the documented 16 kHz; a setting nothing read is refused."""
    monkeypatch.setenv("ASSEMBLYAI_API_KEY", "k" * 32)
    path = tmp_path / "config.yaml"
    path.write_text("live:\n  sample_rate: 16000\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "unknown setting" in str(info.value)


def test_the_reconnect_section_converts_into_the_policys_limits():
    from appliance.config import reconnect_limits

    assert reconnect_limits(ReconnectConfig()) == DEFAULT_RECONNECT_LIMITS
    slow = reconnect_limits(ReconnectConfig(base_seconds=1.0, auth_retry_seconds=60.0))
    assert slow.retry.base_seconds == 1.0 and slow.slow_retry_seconds == 60.0


def test_every_literal_typed_setting_takes_exactly_its_values_as_choices():
    from appliance import config as c

    sections = [t for t in vars(c).values() if isinstance(t, type) and dataclasses.is_dataclass(t)]
    seen = 0
    for section in sections:
        hints = typing.get_type_hints(section)
        for field in dataclasses.fields(section):
            limits = field.metadata.get("appliance_setting")
            if typing.get_origin(hints[field.name]) is typing.Literal and limits is not None:
                assert limits.choices == typing.get_args(hints[field.name]), field.name
                seen += 1
    assert seen >= 9


def test_the_account_modes_are_the_devices_modes():
    from appliance.modes import MODES
    from appliance.protocol.account import AccountMode

    assert typing.get_args(AccountMode) == MODES
