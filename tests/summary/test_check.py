"""``appliance check`` says plainly whether summaries can be made on this device."""

from __future__ import annotations

import io

from appliance.check import WARN, Report, check_summary
from appliance.config import Config
from appliance.secrets import Secret


def checked(config: Config) -> str:
    out = io.StringIO()
    check_summary(Report(out), config)
    return out.getvalue()


def test_a_device_behind_a_token_broker_is_told_summaries_need_the_key():
    config = Config()
    config.summary.enabled = True
    config.auth.token_broker.url = "https://broker.example/token"
    config.broker_credential = Secret("device-credential")
    text = checked(config)
    assert text.startswith(f"{WARN} summary:") and "need the API key on the device" in text


def test_a_device_with_the_key_names_the_model_and_the_gateway():
    config = Config()
    config.summary.enabled = True
    config.endpoints.region = "eu"
    config.summary.model = "gemini-2.5-pro"
    config.api_key = Secret("k" * 32)
    assert "gemini-2.5-pro on llm-gateway.eu.assemblyai.com" in checked(config)


def test_nothing_is_said_while_summaries_are_off():
    assert checked(Config()) == ""
