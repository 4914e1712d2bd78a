"""The summary settings: documented model ids only, and the EU gateway's providers only."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import ConfigError, load_config


@pytest.fixture
def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("ASSEMBLYAI_API_KEY", "test-api-key-0123456789")

    def write(text: str) -> Path:
        path = tmp_path / "config.yaml"
        path.write_text(text)
        return path

    return write


def problems(path: Path) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [(p.line, p.key, p.message) for p in caught.value.problems]


@pytest.mark.parametrize("model", ["gpt-5.2", "gpt-4.1", "kimi-k2.5", "qwen3-next-80b-a3b"])
def test_the_eu_region_refuses_a_model_its_gateway_does_not_serve(write, model):
    path = write(f"endpoints:\n  region: eu\nsummary:\n  enabled: true\n  model: {model}\n")
    [(line, key, message)] = problems(path)
    assert (line, key) == (5, "summary.model")
    assert "EU LLM Gateway" in message and "Claude and Gemini" in message


def test_the_refusal_names_the_file(write):
    path = write("endpoints:\n  region: eu\nsummary:\n  enabled: true\n  model: gpt-5.2\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}:5: summary.model:")


def test_a_gateway_url_on_the_eu_host_is_the_eu_region(write):
    path = write(
        "endpoints:\n  llm_gateway_url: https://llm-gateway.eu.assemblyai.com/v1/chat/completions\n"
        "summary:\n  enabled: true\n  model: kimi-k2.5\n"
    )
    assert [key for _line, key, _m in problems(path)] == ["summary.model"]


@pytest.mark.parametrize("model", ["claude-sonnet-4-6", "gemini-2.5-flash"])
def test_the_eu_region_takes_claude_and_gemini(write, model):
    config = load_config(
        write(f"endpoints:\n  region: eu\nsummary:\n  enabled: true\n  model: {model}\n")
    )
    assert (
        config.urls.llm_gateway_url == "https://llm-gateway.eu.assemblyai.com/v1/chat/completions"
    )


def test_the_us_gateway_serves_every_documented_model(write):
    config = load_config(write("summary:\n  enabled: true\n  model: qwen3-next-80b-a3b\n"))
    assert config.urls.llm_gateway_url == "https://llm-gateway.assemblyai.com/v1/chat/completions"


@pytest.mark.parametrize("model", ["claude-sonnet-4", "gpt-5", "claude-haiku-4-5"])
def test_a_model_id_without_its_exact_version_is_refused(write, model):
    [(line, key, message)] = problems(write(f"summary:\n  model: {model}\n"))
    assert (line, key) == (2, "summary.model") and "is not allowed" in message


def test_the_emulator_base_url_serves_the_gateway_too(write):
    config = load_config(write("endpoints:\n  base_url: http://127.0.0.1:8765\n"))
    assert config.urls.llm_gateway_url == "http://127.0.0.1:8765/v1/chat/completions"
