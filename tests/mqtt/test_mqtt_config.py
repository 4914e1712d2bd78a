"""The mqtt section: off by default, the password never inline."""

from __future__ import annotations

import pytest

from appliance.config import Config, ConfigError, load_config


def write(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def api_key(monkeypatch) -> None:
    monkeypatch.setenv("ASSEMBLYAI_API_KEY", "k" * 32)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)


def test_mqtt_is_off_by_default() -> None:
    assert Config().mqtt.enabled is False


def test_an_inline_password_is_refused_with_where_to_put_it(tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "mqtt:\n  enabled: true\n  password: hunter2\n"))
    assert "mqtt.password: secrets are never given inline" in str(info.value)
    assert "mqtt.password_file" in str(info.value) and "hunter2" not in str(info.value)


def test_the_password_comes_from_its_file(tmp_path) -> None:
    secret = tmp_path / "mqtt-password"
    secret.write_text("s3cret\n")
    secret.chmod(0o600)
    config = load_config(
        write(tmp_path, f"mqtt:\n  enabled: true\n  username: dev\n  password_file: {secret}\n")
    )
    assert config.mqtt_password is not None and config.mqtt_password.reveal() == "s3cret"
    assert "s3cret" not in repr(config.mqtt_password)


def test_the_password_comes_from_a_systemd_credential(tmp_path, monkeypatch) -> None:
    (tmp_path / "mqtt-password").write_text("from-systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    config = load_config(write(tmp_path, "mqtt:\n  enabled: true\n"))
    assert config.mqtt_password is not None and config.mqtt_password.reveal() == "from-systemd"


def test_a_missing_password_file_is_reported(tmp_path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "mqtt:\n  enabled: true\n  password_file: /nonexistent\n"))
    assert "mqtt.password_file: the MQTT password: file '/nonexistent' not found" in str(info.value)
