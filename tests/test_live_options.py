"""The live section's streaming options: checked against the speech model, sent on the URL."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from appliance.check import run_check
from appliance.config import Config, ConfigError, load_config
from appliance.exitcodes import ExitCode
from appliance.live import live_query
from appliance.protocol.tuning import Tuning

KEY = "k" * 32


def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, live: str) -> Config:
    monkeypatch.setenv("ASSEMBLYAI_API_KEY", KEY)
    path = tmp_path / "config.yaml"
    path.write_text("live:\n" + live)
    return load_config(path)


def problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, live: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, monkeypatch, live)
    return [str(p) for p in info.value.problems]


def test_speaker_labels_and_the_prompt_are_asked_for_on_the_url(tmp_path, monkeypatch):
    config = load(tmp_path, monkeypatch, "  speaker_labels: true\n  prompt: Transcribe Spanish\n")
    q = live_query(config.live)
    assert q["speaker_labels"] == "true" and q["prompt"] == "Transcribe Spanish"


def test_speaker_labels_off_are_not_sent():
    assert "speaker_labels" not in live_query(Config().live)


def test_the_prompt_on_another_model_is_refused_at_its_line(tmp_path, monkeypatch):
    found = problems(
        tmp_path,
        monkeypatch,
        "  speech_model: universal-streaming-english\n  prompt: Transcribe Spanish\n",
    )
    assert any(
        ":3: live.prompt: prompt is documented for speech_model 'u3-rt-pro'" in p for p in found
    )


def test_u3_pro_refuses_the_end_of_turn_threshold_it_would_ignore(tmp_path, monkeypatch):
    found = problems(tmp_path, monkeypatch, "  end_of_turn_confidence_threshold: 0.6\n")
    assert any("live.end_of_turn_confidence_threshold: " in p and "ignores" in p for p in found)


def test_the_threshold_on_a_model_that_uses_it_is_fine(tmp_path, monkeypatch):
    config = load(
        tmp_path,
        monkeypatch,
        "  speech_model: universal-streaming-english\n  end_of_turn_confidence_threshold: 0.6\n",
    )
    assert live_query(config.live)["end_of_turn_confidence_threshold"] == "0.6"


def test_a_min_turn_silence_above_the_max_is_refused(tmp_path, monkeypatch):
    found = problems(tmp_path, monkeypatch, "  min_turn_silence: 900\n  max_turn_silence: 100\n")
    assert any("live.min_turn_silence: 900 ms exceeds live.max_turn_silence" in p for p in found)


def test_a_retuned_query_replaces_the_configured_key_terms_and_silences():
    live = Config().live
    live.keyterms_prompt = ["Pi"]
    live.min_turn_silence = 200
    q = live_query(live, Tuning(keyterms_prompt=("Zero",), min_turn_silence=300))
    assert json.loads(q["keyterms_prompt"]) == ["Zero"] and q["min_turn_silence"] == "300"
    assert "max_turn_silence" not in q


def test_appliance_check_refuses_a_combination_the_model_ignores(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("live:\n  end_of_turn_confidence_threshold: 0.5\n")
    out = io.StringIO()
    args = argparse.Namespace(config=str(config), verbose=False, tone=False, seconds=0)
    assert run_check(args, out=out) == ExitCode.CONFIG
    assert "live.end_of_turn_confidence_threshold" in out.getvalue()
