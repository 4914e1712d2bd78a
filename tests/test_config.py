"""Broken configurations are reported with the exact file, line and key; good ones load."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from appliance.config import Config, ConfigError, find_config_path, load_config

KEY = "test-api-key-0123456789"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "api-key"
    path.write_text(KEY + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ASSEMBLYAI_API_KEY", "CREDENTIALS_DIRECTORY", "APPLIANCE_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, text: str, key_file: Path | None = None) -> Path:
    if key_file is not None and "api_key_file" not in text and "\nauth:" not in text:
        text += f"\nauth:\n  api_key_file: {key_file}\n"
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


# (name, yaml text, line, key, fragment of the message)
BROKEN = [
    ("syntax error", "mode: live\nlive: [unclosed\n", 3, "", "YAML syntax error"),
    ("top level not a mapping", "- live\n", 1, "", "top level must be a mapping"),
    ("unknown top-level key", "mode: live\nmdoe: agent\n", 2, "mdoe", "did you mean 'mode'"),
    (
        "unknown nested key",
        "live:\n  chunk_msec: 100\n",
        2,
        "live.chunk_msec",
        "did you mean 'live.chunk_ms'",
    ),
    ("bad choice", "mode: recorder\n", 1, "mode", "'recorder' is not allowed"),
    ("chunk too short", "live:\n  chunk_ms: 20\n", 2, "live.chunk_ms", "allowed: 50..1000 ms"),
    ("chunk too long", "live:\n  chunk_ms: 1500\n", 2, "live.chunk_ms", "out of range"),
    (
        "wrong type text for int",
        "live:\n  chunk_ms: fast\n",
        2,
        "live.chunk_ms",
        "expected an integer, got text ('fast')",
    ),
    (
        "bool for number",
        "audio:\n  preroll_seconds: yes\n",
        2,
        "audio.preroll_seconds",
        "expected a number, got a boolean",
    ),
    (
        "list expected",
        "live:\n  keyterms_prompt: Pi\n",
        2,
        "live.keyterms_prompt",
        "expected a list",
    ),
    ("section not a mapping", "agent: chatty\n", 1, "agent", "expected a mapping of settings"),
    ("unknown voice", "agent:\n  voice: claire\n", 2, "agent.voice", "'claire' is not allowed"),
    (
        "bad url scheme",
        "endpoints:\n  streaming_url: http://127.0.0.1/v3/ws\n",
        2,
        "endpoints.streaming_url",
        "allowed schemes: ws, wss",
    ),
    (
        "plain http to a remote host",
        "endpoints:\n  base_url: http://203.0.113.5:8765\n",
        2,
        "endpoints.base_url",
        "only allowed to loopback",
    ),
    (
        "not a url",
        "endpoints:\n  rest_url: api.assemblyai.com\n",
        2,
        "endpoints.rest_url",
        "is not a valid URL",
    ),
    ("inline api key", "auth:\n  api_key: abc123abc123\n", 2, "auth.api_key", "never given inline"),
    (
        "missing secret file",
        "auth:\n  api_key_file: /nonexistent/api-key\n",
        2,
        "auth.api_key_file",
        "not found",
    ),
    (
        "tool without name",
        "agent:\n  tools:\n    - kind: command\n      command: [date]\n",
        3,
        "agent.tools[0].name",
        "required setting is missing",
    ),
    (
        "http tool without url",
        "agent:\n  tools:\n    - name: lights\n",
        3,
        "agent.tools[0].url",
        "needs a url",
    ),
    ("rgb led with one pin", "led:\n  kind: rgb\n  pins: [5]\n", 3, "led.pins", "needs 3 pin(s)"),
    (
        "key term too long",
        "live:\n  keyterms_prompt:\n    - " + "x" * 51 + "\n",
        3,
        "live.keyterms_prompt[0]",
        "at most 50 characters",
    ),
    (
        "file source without file",
        "audio:\n  source: file\n",
        2,
        "audio.input_file",
        "needs audio.input_file",
    ),
    ("duplicate key", "mode: live\nmode: agent\n", 2, "mode", "given twice"),
    ("null for a required number", "live:\n  chunk_ms: null\n", 2, "live.chunk_ms", "got null"),
    (
        "negative preroll",
        "audio:\n  preroll_seconds: -1\n",
        2,
        "audio.preroll_seconds",
        "allowed: 0..5 s",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN]
)
def test_broken_config_names_file_line_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, line: int, key: str, fragment: str
) -> None:
    monkeypatch.setenv("ASSEMBLYAI_API_KEY", KEY)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    expected = f"{path}:{line}: {key}: " if key else f"{path}:{line}: "
    matching = [str(p) for p in info.value.problems if str(p).startswith(expected)]
    assert matching, f"no problem at {expected!r} in:\n{info.value}"
    assert any(fragment in m for m in matching), f"{fragment!r} not in {matching}"


def test_every_problem_is_reported_at_once(tmp_path: Path, key_file: Path) -> None:
    path = write(tmp_path, "mode: x\nlive:\n  chunk_ms: 1\naudio:\n  volume: 9\n", key_file)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [p.key for p in info.value.problems] == ["mode", "live.chunk_ms", "audio.volume"]


def test_unreadable_secret_file_is_named(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        secret = tmp_path / "key-dir"
        secret.mkdir()  # a directory cannot be read as a file, even by root
    else:
        secret = tmp_path / "key"
        secret.write_text(KEY)
        secret.chmod(0)
    path = write(tmp_path, f"auth:\n  api_key_file: {secret}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}:2: auth.api_key_file: ")
    assert "cannot read" in str(info.value)


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: file not found"):
        load_config(tmp_path / "nope.yaml")


def test_no_api_key_anywhere_says_where_to_put_it(tmp_path: Path) -> None:
    path = write(tmp_path, "mode: live\n")
    with pytest.raises(ConfigError, match=r"API key is not set: give auth\.api_key_file"):
        load_config(path)


def test_valid_config_loads_typed_values(tmp_path: Path, key_file: Path) -> None:
    path = write(
        tmp_path,
        "mode: agent\nlive:\n  chunk_ms: 200\n  keyterms_prompt: [Pi]\n"
        "agent:\n  voice: sophie\n  tools:\n    - name: lights\n"
        "      url: http://127.0.0.1:9/x\n",
        key_file,
    )
    config = load_config(path)
    assert config.mode == "agent"
    assert config.live.chunk_ms == 200
    assert config.live.keyterms_prompt == ["Pi"]
    assert config.agent.voice == "sophie"
    assert config.agent.tools[0].name == "lights"
    assert config.api_key is not None and config.api_key.reveal() == KEY
    assert str(config.api_key) == "***" and KEY not in repr(config)


def test_relative_paths_are_relative_to_the_config_file(
    tmp_path: Path, key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "key").write_text(KEY)
    path = write(tmp_path, "auth:\n  api_key_file: sub/key\n")
    monkeypatch.chdir("/")
    assert load_config(path).api_key.reveal() == KEY


def test_systemd_credential_supplies_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "assemblyai-api-key").write_text(KEY)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    config = load_config(write(tmp_path, "mode: live\n"))
    assert config.api_key.reveal() == KEY
    assert config.api_key.source == "systemd credential assemblyai-api-key"


def test_environment_key_for_a_developer_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ASSEMBLYAI_API_KEY", KEY)
    assert load_config(write(tmp_path, "mode: live\n")).api_key.reveal() == KEY


def test_token_broker_needs_its_credential_not_the_api_key(tmp_path: Path) -> None:
    cred = tmp_path / "device-cred"
    cred.write_text("device-credential-42")
    config = load_config(
        write(
            tmp_path,
            "auth:\n  token_broker:\n    url: https://example.org/t\n"
            f"    credential_file: {cred}\n",
        )
    )
    assert config.api_key is None
    assert config.broker_credential.reveal() == "device-credential-42"


def test_region_picks_the_documented_hosts() -> None:
    config = Config()
    config.endpoints.region = "eu"
    urls = config.urls
    assert urls.streaming_url == "wss://streaming.eu.assemblyai.com/v3/ws"
    assert urls.rest_url == "https://api.eu.assemblyai.com"
    config.endpoints.region = "us"
    assert config.urls.streaming_token_url == "https://streaming.us.assemblyai.com/v3/token"


def test_base_url_points_every_product_at_one_server() -> None:
    config = Config()
    config.endpoints.base_url = "http://127.0.0.1:8765"
    urls = config.urls
    assert urls.streaming_url == "ws://127.0.0.1:8765/v3/ws"
    assert urls.agent_url == "ws://127.0.0.1:8765/v1/ws"
    assert urls.agent_token_url == "http://127.0.0.1:8765/v1/token"
    assert urls.rest_url == "http://127.0.0.1:8765"


def test_lookup_order_cli_then_env_then_etc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APPLIANCE_CONFIG", str(tmp_path / "env.yaml"))
    assert find_config_path(tmp_path / "cli.yaml") == tmp_path / "cli.yaml"
    assert find_config_path(None) == tmp_path / "env.yaml"


def test_example_config_is_valid_and_shows_every_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """config/appliance.yaml documents every option with exactly its default value."""
    example = Path(__file__).resolve().parents[1] / "config" / "appliance.yaml"
    monkeypatch.setenv("ASSEMBLYAI_API_KEY", KEY)
    loaded = load_config(example)
    defaults = Config()
    for name in (
        "mode",
        "endpoints",
        "audio",
        "button",
        "led",
        "earcons",
        "reconnect",
        "live",
        "agent",
        "spool",
        "upload",
        "web",
        "logging",
    ):
        assert getattr(loaded, name) == getattr(defaults, name), name


def test_secret_file_permissions_are_not_loosened(tmp_path: Path, key_file: Path) -> None:
    load_config(write(tmp_path, "mode: live\n", key_file))
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_example_config_is_generated_from_the_schema() -> None:
    """Adding a setting without regenerating the example fails here:
    run scripts/gen_config_example.py."""
    from appliance.settings import render_example
    from scripts.gen_config_example import TITLE

    example = Path(__file__).resolve().parents[1] / "config" / "appliance.yaml"
    assert example.read_text() == render_example(Config, TITLE)
