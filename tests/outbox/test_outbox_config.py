"""The outbox's settings: one destination, a private credential file, no plain http abroad."""

from __future__ import annotations

import pytest

from appliance.config import ConfigError, load_config

CREDENTIAL = "Bearer outbox-cred-5a4b3c2d1e"


@pytest.fixture(autouse=True)
def _api_key(monkeypatch):
    monkeypatch.setenv("ASSEMBLYAI_API_KEY", "test-api-key-0123456789")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


def load(tmp_path, outbox: str):
    path = tmp_path / "config.yaml"
    path.write_text("outbox:\n" + outbox)
    return load_config(path)


def problems(tmp_path, outbox: str) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, outbox)
    return str(info.value)


def credential(tmp_path, mode: int):
    path = tmp_path / "outbox-cred"
    path.write_text(CREDENTIAL + "\n")
    path.chmod(mode)
    return path


def test_a_private_credential_file_is_read_as_a_secret(tmp_path):
    cred = credential(tmp_path, 0o600)
    config = load(
        tmp_path, f"  enabled: true\n  url: https://example.com/in\n  auth_file: {cred}\n"
    )
    assert config.outbox_auth is not None and config.outbox_auth.reveal() == CREDENTIAL
    assert CREDENTIAL not in repr(config)


def test_a_credential_file_others_can_read_is_refused_without_showing_it(tmp_path):
    cred = credential(tmp_path, 0o644)
    text = problems(
        tmp_path, f"  enabled: true\n  url: https://example.com/in\n  auth_file: {cred}\n"
    )
    assert "outbox.auth_file" in text and "readable by others" in text
    assert CREDENTIAL not in text


@pytest.mark.parametrize(
    "outbox",
    [
        "  enabled: true\n",
        "  enabled: true\n  url: https://example.com/in\n  command: [deliver]\n",
    ],
)
def test_an_enabled_outbox_needs_exactly_one_destination(tmp_path, outbox):
    assert "needs a url or a command (one)" in problems(tmp_path, outbox)


def test_plain_http_is_only_for_loopback_unless_allowed(tmp_path):
    assert "only allowed to loopback" in problems(
        tmp_path, "  enabled: true\n  url: http://example.com/in\n"
    )
    load(tmp_path, "  enabled: true\n  url: http://127.0.0.1:9000/in\n")
    load(tmp_path, "  enabled: true\n  url: http://example.com/in\n  allow_insecure: true\n")


def test_a_header_name_must_be_one(tmp_path):
    text = problems(
        tmp_path, "  enabled: true\n  url: https://example.com/in\n  auth_header: 'X Bad: 1'\n"
    )
    assert "outbox.auth_header" in text
