"""The README's embedding example, run as written against the emulator."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import wave
from pathlib import Path

from appliance import dtmf
from appliance.emulator.recognizer import digits_of

README = Path(__file__).resolve().parents[2] / "README.md"
DIGITS = "42 17"


def test_every_public_name_is_exported():
    import appliance

    assert sorted(appliance.__all__) == sorted([*appliance._EXPORTS, "__version__"])
    for name in appliance.__all__:
        assert getattr(appliance, name) is not None


def readme_example() -> str:
    """The ```python block of the README's "Embedding live transcription" section."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Embedding live transcription", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section holds one python example"
    return blocks[0]


def write_wav(path: Path, rate: int = 16_000) -> None:
    samples = dtmf.generate(DIGITS, rate, lead_ms=300, trail_ms=1500)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())


def test_the_readme_example_transcribes_a_file(emulator, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(readme_example(), encoding="utf-8")
    wav = tmp_path / "speech.wav"
    write_wav(wav)
    env = dict(os.environ, ASSEMBLYAI_BASE_URL=emulator.http_url)
    env["ASSEMBLYAI_API_KEY"] = emulator.api_key
    done = subprocess.run(
        [sys.executable, str(script), str(wav)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    turns = [line.split(": ", 1)[1] for line in lines if re.match(r"\d+: ", line)]
    assert "".join(digits_of(" ".join(turns))) == DIGITS.replace(" ", "")
    assert lines[-1].startswith("captured ") and "lost 0.000 s" in lines[-1], lines[-1]


async def test_the_transcriber_writes_nothing_of_its_own_and_can_yield_partials(
    emulator, tmp_path, monkeypatch
):
    import asyncio

    from appliance import EndpointsConfig, LiveOptions, LiveTranscriber, MintedTokens, RingBuffer
    from appliance.secrets import Secret

    from .helpers import CAPTURE_RATE, Feeder

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    urls = EndpointsConfig(base_url=emulator.http_url).resolved()
    ring = RingBuffer(CAPTURE_RATE, 10.0)
    feeder = Feeder(ring, dtmf.generate("58", CAPTURE_RATE, lead_ms=300, trail_ms=1500))
    tokens = MintedTokens.streaming(urls.streaming_token_url, Secret(emulator.api_key))
    feeder.start()
    turns = []
    try:
        async with LiveTranscriber(
            LiveOptions(url=urls.streaming_url), tokens, ring, start_index=0, partials=True
        ) as t:
            async for turn in t.turns():
                turns.append(turn)
                if turn.final and "".join(digits_of(turn.text)) == "58":
                    t.stop()
    finally:
        feeder.halt.set()
        await tokens.aclose()
    assert any(not x.final for x in turns) and turns[-1].final
    assert t.account is not None and t.account.balanced and t.account.lost_samples == 0
    assert list(work.iterdir()) == []  # no JSONL, no spool: subscribers are opt-in
    assert await asyncio.wait_for(_empty(t), 1) == []  # turns() after the end: empty


async def _empty(t) -> list:
    return [turn async for turn in t.turns()]
