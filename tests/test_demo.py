"""The README's first command: `appliance demo` runs every mode and gets the digits back."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from appliance.config import Config


def test_demo_runs_every_mode_and_reports_success(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "appliance", "demo", "--digits", "2 7", "--exports", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "summary: live ok, record ok, agent ok" in proc.stdout
    # Two speakers, and the key term set mid-session spells the later turn.
    assert "final [A]: Two." in proc.stdout and "final [B]: SEVEN." in proc.stdout
    assert "retune: key terms ['SEVEN'] (UpdateConfiguration)" in proc.stdout
    # A summary of the live session (a bullet per turn) and of the recording (one turn).
    model = "claude-haiku-4-5-20251001"
    assert f"summary of the session ({model}):\n      Summary:\n      - 2\n" in proc.stdout
    assert f"summary of the recording ({model}):\n      Summary:\n      - 27\n" in proc.stdout
    assert f"exports kept in {tmp_path}" in proc.stdout
    _expect_exports(tmp_path / "live", "session", speakers=True)
    _expect_exports(tmp_path / "record", "recording", speakers=False)


def _expect_exports(folder: Path, kind: str, *, speakers: bool) -> None:
    """One item, in each format, well-formed, saying the digits spoken (2 7), summary included."""
    from appliance.demo import words_to_digits

    (txt,) = folder.glob(f"{kind}-*.txt")
    stem = txt.with_suffix("")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{stem.name}.{fmt}" for fmt in ("txt", "md", "srt", "vtt", "json")
    )
    assert words_to_digits(txt.read_text()) == "27"
    markdown = stem.with_suffix(".md").read_text()
    assert markdown.startswith(f"# {kind.capitalize()} ") and "## Summary" in markdown
    if speakers:
        assert "Speaker A:" in markdown and "Speaker B:" in markdown
    srt = stem.with_suffix(".srt").read_text()
    assert re.match(r"1\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n", srt), srt
    vtt = stem.with_suffix(".vtt").read_text()
    cue_time = r"(\d\d:)?\d\d:\d\d\.\d{3}"  # WebVTT's hours are optional (the API's omit them)
    assert re.match(rf"WEBVTT\s*\n\n{cue_time} --> {cue_time}\n", vtt), vtt
    data = json.loads(stem.with_suffix(".json").read_text())
    assert data["kind"] == kind and data["summary"] is not None
    assert all(p.stat().st_mode & 0o077 == 0 for p in folder.iterdir())  # transcripts are private


async def _agent_demo_as_on_a_device(monkeypatch: pytest.MonkeyPatch, lead: float) -> int:
    """The demo's agent mode, pressed ``lead`` s before the question, with the microphone
    linked to the speaker as wiring links a PortAudio pair: half duplex then silences, by
    capture time, what the microphone took while the speaker sounded (start earcon,
    greeting, reply) plus ``audio.echo_tail_ms``, which is what a device does."""
    from appliance import demo, wiring
    from appliance.audio.own_sound import OwnSound, link_own_sound

    rings: list[Any] = []
    noted: list[OwnSound] = []
    open_source, open_sink = wiring.open_source, wiring.open_sink

    def source(config: Config, *args: Any, **kwargs: Any) -> Any:
        microphone = open_source(config, *args, **kwargs)
        rings.append(microphone.ring)
        return microphone

    def sink(config: Config, *args: Any, **kwargs: Any) -> Any:
        speaker = open_sink(config, *args, **kwargs)
        noted.append(link_own_sound(rings[-1], speaker, config.audio.echo_tail_ms / 1000))
        return speaker

    monkeypatch.setattr(wiring, "open_source", source)
    monkeypatch.setattr(wiring, "open_sink", sink)
    monkeypatch.setattr(demo, "AGENT_PRESS_BEFORE_SPEECH", lead)
    monkeypatch.setattr(demo, "AGENT_TIMEOUT", 4.0)  # a reply comes within 2 s of the question
    try:
        return await demo._demo("27", ["agent"], None)
    finally:
        assert noted and noted[-1].sounds  # the speaker's sounds were noted for the microphone


async def test_the_agent_question_is_asked_after_the_greeting_so_half_duplex_keeps_all_of_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from appliance import demo

    asked_after = demo.AGENT_PRESS_BEFORE_SPEECH
    # The cause of the demo's lost first digit: pressed 0.3 s before speech (the live and
    # record timing), the question starts while the start earcon and the greeting still
    # sound (until 0.45 s after the press), and a device's half duplex silences it, as it
    # must.  The demo's own (unlinked) run muted by send time and passed only when the
    # unmute beat the next capture block, sending audio captured over the greeting.
    with pytest.raises(TimeoutError):
        await _agent_demo_as_on_a_device(monkeypatch, lead=0.3)
    out = capsys.readouterr().out
    assert "agent: Hi! How can I help?" in out and "you:   two" not in out
    # Asked once the greeting has sounded out, every digit reaches the agent.
    assert await _agent_demo_as_on_a_device(monkeypatch, asked_after) == 0
    assert "you:   two seven" in capsys.readouterr().out
