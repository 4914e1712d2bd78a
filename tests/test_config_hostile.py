"""Hostile configuration files: each is refused with file, line and key (exit 3), at once.

One row per input a careless or malicious user tried (issue 17), and the few that
must load instead: a section whose settings are all commented out means its defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from appliance import yamlread
from appliance.check import run_check
from appliance.cli import main
from appliance.config import LOAD_LIMITS, Config, ConfigError, load_config

KEY = "test-api-key-0123456789"
#: Every row must be judged within this much CPU time (the unit's start timeout is 60 s);
#: CPU time, so that other processes' turns on a loaded test machine do not count.
BUDGET_S = 1.0


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CREDENTIALS_DIRECTORY", "APPLIANCE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ASSEMBLYAI_API_KEY", KEY)


@pytest.fixture(params=[True, False], ids=["libyaml", "pure-python"])
def event_source(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run a test with libyaml's events and with PyYAML's own parser."""
    libyaml = request.param
    if libyaml and not yamlread.HAVE_LIBYAML:
        pytest.skip("PyYAML was built without libyaml")
    real = yamlread.compose
    monkeypatch.setattr(
        "appliance.config.compose", lambda text, **kw: real(text, libyaml=libyaml, **kw)
    )
    return libyaml


def nested_free_form(levels: int) -> str:
    """``upload.extra`` holding ``levels`` levels of collections, itself the first."""
    return "upload:\n  extra:\n    a: " + "[" * (levels - 1) + "]" * (levels - 1) + "\n"


def laughs(levels: int = 9) -> str:
    """An alias bomb: 9 ** levels values from a few hundred bytes."""
    lines = ["upload:", "  extra:", "    l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"    l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def tools_bomb() -> str:
    """Aliases in schema-typed settings multiply too: 300 tools sharing a 300-value schema."""
    props = ", ".join(f"p{i}: {{type: string}}" for i in range(150))
    tool = f"{{name: t, url: 'http://127.0.0.1/x', parameters: {{properties: {{{props}}}}}}}"
    return f"x-tool: &t {tool}\nagent:\n  tools: [" + ", ".join(["*t"] * 300) + "]\n"


# (id, yaml text, line, key, fragment of the message)
REFUSED = [
    ("!!int abc", "live:\n  chunk_ms: !!int abc\n", 2, "live.chunk_ms", "not a valid !!int"),
    ("!!float xyz", "audio:\n  volume: !!float xyz\n", 2, "audio.volume", "not a valid !!float"),
    ("!!bool maybe", "button:\n  enabled: !!bool maybe\n", 2, "button.enabled", "!!bool"),
    ("!!timestamp x", "live:\n  prompt: !!timestamp x\n", 2, "live.prompt", "!!timestamp"),
    ("!foo", "live:\n  prompt: !foo bar\n", 2, "live.prompt", "tag !foo is not allowed"),
    ("!!null with text", "live:\n  prompt: !!null foo\n", 2, "live.prompt", "!!null"),
    (
        "!!python/object/apply in upload.extra",
        "upload:\n  extra:\n    x: !!python/object/apply:os.system ['touch /tmp/pwned']\n",
        3,
        "upload.extra.x",
        "tag !!python/object/apply:os.system is not allowed",
    ),
    (
        "!!python/name on a section",
        "live: !!python/name:os.system {}\n",
        1,
        "live",
        "is not allowed",
    ),
    ("!!set on a section", "live: !!set {chunk_ms}\n", 1, "live", "tag !!set is not allowed"),
    ("!!binary", "live:\n  prompt: !!binary aGVsbG8=\n", 2, "live.prompt", "!!binary"),
    ("impossible date", "live:\n  prompt: 2024-13-45\n", 2, "live.prompt", "!!timestamp"),
    ("int of 5000 digits", "live:\n  chunk_ms: " + "9" * 5000 + "\n", 2, "live.chunk_ms", "!!int"),
    (".nan volume", "audio:\n  volume: .nan\n", 2, "audio.volume", "finite number, got .nan"),
    (
        ".nan sync interval",
        "spool:\n  sync_interval_seconds: .nan\n",
        2,
        "spool.sync_interval_seconds",
        "finite number",
    ),
    (".inf volume", "audio:\n  volume: .inf\n", 2, "audio.volume", "finite number, got .inf"),
    (
        "-.inf retention",
        "spool:\n  retention_days: -.inf\n",
        2,
        "spool.retention_days",
        "finite number",
    ),
    (".nan for an int", "live:\n  chunk_ms: .nan\n", 2, "live.chunk_ms", "expected an integer"),
    (
        ".nan in upload.extra",
        "upload:\n  extra:\n    boost: .nan\n",
        3,
        "upload.extra.boost",
        "not a JSON number",
    ),
    (
        "a date in upload.extra",
        "upload:\n  extra:\n    since: 2024-01-01\n",
        3,
        "upload.extra.since",
        "quote it",
    ),
    (
        "a list as a key in upload.extra",
        "upload:\n  extra:\n    ? [a, b]\n    : 1\n",
        3,
        "upload.extra.?",
        "a key must be text",
    ),
    (
        "a number as a key in upload.extra",
        "upload:\n  extra:\n    1: x\n",
        3,
        "upload.extra.1",
        "a key must be text",
    ),
    (
        "a key twice in upload.extra",
        "upload:\n  extra:\n    a: 1\n    a: 2\n",
        4,
        "upload.extra.a",
        "given twice",
    ),
    (
        "free-form nesting past the limit",
        nested_free_form(LOAD_LIMITS.max_free_form_depth + 1),
        3,
        "upload.extra.a" + "[0]" * (LOAD_LIMITS.max_free_form_depth - 1),
        f"nested deeper than {LOAD_LIMITS.max_free_form_depth} levels",
    ),
    (
        "self-reference in upload.extra",
        "upload:\n  extra:\n    a: &a [1, *a]\n",
        3,
        "upload.extra.a[1]",
        "alias (*a) is not allowed",
    ),
    (
        "alias bomb in upload.extra",
        laughs(),
        4,
        "upload.extra.l1[0]",
        "alias (*l0) is not allowed",
    ),
    (
        "an anchor from elsewhere used in upload.extra",
        "live:\n  keyterms_prompt: &k [a]\nupload:\n  extra:\n    terms: *k\n",
        5,
        "upload.extra.terms",
        "alias (*k) is not allowed",
    ),
    (
        "self-reference in a section",
        "live: &l\n  chunk_ms: 100\n  live: *l\n",
        3,
        "live.live",
        "unknown setting",
    ),
    ("merge key", "live:\n  <<: {chunk_ms: 200}\n", 2, "live.<<", "merge keys (<<)"),
    (
        "relative state_dir climbing out",
        "state_dir: ../../var/lib/elsewhere\n",
        1,
        "state_dir",
        "climbs out of",
    ),
    (
        "relative spool directory climbing out",
        "spool:\n  directory: state/../../spool\n",
        2,
        "spool.directory",
        "give an absolute path",
    ),
    (
        "a key longer than a line",
        "live:\n  " + "k" * 1000 + ": 1\n",  # YAML allows 1024 characters in a key
        2,
        "live." + "k" * 59 + "…",
        "unknown setting",
    ),
    (
        "a value longer than a line",
        "mode: " + "x" * 5000 + "\n",
        1,
        "mode",
        "is not allowed",
    ),
    ("a list as a key", "? [mode]\n: live\n", 1, "?", "a key must be a name"),
]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def refused(path: Path) -> ConfigError:
    start = time.process_time()
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert time.process_time() - start < BUDGET_S
    return info.value


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED]
)
def test_hostile_value_is_refused_with_file_line_and_key(
    tmp_path: Path, event_source: bool, text: str, line: int, key: str, fragment: str
) -> None:
    path = write(tmp_path, text)
    error = refused(path)
    expected = f"{path}:{line}: {key}: " if key else f"{path}:{line}: "
    matching = [str(p) for p in error.problems if str(p).startswith(expected)]
    assert matching, f"no problem at {expected!r} in:\n{error}"
    assert any(fragment in m for m in matching), f"{fragment!r} not in {matching}"
    assert all(len(str(p)) < 800 for p in error.problems), "a message quotes too much"


# (id, yaml text, line or None, fragment): problems with the file as a whole
REFUSED_FILE = [
    ("20,000-deep flow nesting", "a: " + "[" * 20_000 + "]" * 20_000 + "\n", 1, "nest"),
    # Deeper block nesting would not fit in max_file_bytes: its indentation grows with it.
    ("400-deep block nesting", "".join(" " * i + f"k{i}:\n" for i in range(400)), 33, "nest"),
    (
        "alias bomb through schema lists",
        tools_bomb(),
        None,  # where the count ran out
        f"more than {LOAD_LIMITS.max_values} values once its aliases are expanded",
    ),
    (
        "more values than the limit",
        "live:\n  keyterms_prompt: [" + ", ".join(["a"] * LOAD_LIMITS.max_values) + "]\n",
        2,
        f"more than {LOAD_LIMITS.max_values} values (the limit)",
    ),
    ("two documents", "mode: live\n---\nmode: agent\n", 2, "YAML syntax error"),
    ("undefined alias", "mode: *nothing\n", 1, "YAML syntax error"),
    ("a NUL byte", "mode: live\x00\n", None, "YAML syntax error"),
    ("a scalar at the top", "just words\n", 1, "top level must be a mapping"),
]


@pytest.mark.parametrize(
    ("text", "line", "fragment"), [r[1:] for r in REFUSED_FILE], ids=[r[0] for r in REFUSED_FILE]
)
def test_hostile_file_is_refused_with_a_file_level_message(
    tmp_path: Path, event_source: bool, text: str, line: int | None, fragment: str
) -> None:
    path = write(tmp_path, text)
    error = refused(path)
    (problem,) = error.problems
    if line is not None and not (fragment == "nest" and event_source):
        assert problem.line == line, str(problem)  # libyaml stops deep nesting while scanning
    assert str(problem).startswith(f"{path}:")
    assert fragment in problem.message


def test_a_50_mb_file_is_refused_unread_naming_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    with path.open("wb") as f:
        f.write(b"upload:\n  extra:\n")
        f.write(b"    k: {a: 1, b: [x, y]}\n" * (50 * 1024 * 1024 // 25))
    error = refused(path)
    assert str(error) == f"{path}: the file is 50 MiB; the limit is 256 KiB"


def test_a_file_past_the_limit_is_refused_even_when_its_size_is_unknown(tmp_path: Path) -> None:
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError), fifo.open("wb") as f:
            f.write(b"# " + b"x" * (LOAD_LIMITS.max_file_bytes + 10))

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    error = refused(fifo)
    writer.join(5)
    assert str(error) == f"{fifo}: the file is too large; the limit is 256 KiB"


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(b"mode: live\nlive:\n  prompt: caf\xe9\n")
    assert str(refused(path)) == f"{path}:3: cannot read: not UTF-8 text"


def test_thousands_of_mistakes_are_reported_as_the_first_few_and_a_count(tmp_path: Path) -> None:
    path = write(tmp_path, "".join(f"k{i}: 1\n" for i in range(5000)))
    error = refused(path)
    assert len(error.problems) == LOAD_LIMITS.max_problems + 1
    hidden = 5000 - LOAD_LIMITS.max_problems
    assert str(error.problems[-1]) == f"{path}: and {hidden} more problem(s)"


# -- what loads ----------------------------------------------------------------------


def test_a_section_with_every_setting_commented_out_means_its_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "mode: live\nlive:\n  # chunk_ms: 100\n  # format_turns: true\n"
        "auth:\nbutton:\n  agent: ~\nupload:\n  extra: {}\n",
    )
    config = load_config(path)
    defaults = Config()
    assert config.live == defaults.live
    assert config.auth == defaults.auth
    assert config.button.agent == defaults.button.agent  # the agent's own defaults
    assert config.button.agent.short == "start_or_interrupt"


def test_a_partial_section_keeps_the_defaults_of_where_it_sits(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "button:\n  agent:\n    double: none\n"))
    assert (config.button.agent.short, config.button.agent.long) == ("start_or_interrupt", "stop")
    assert config.button.agent.double == "none"


def test_an_empty_or_null_file_means_the_defaults(tmp_path: Path) -> None:
    for text in ("", "# nothing yet\n", "~\n", "null\n"):
        assert load_config(write(tmp_path, text)).live == Config().live


def test_plain_tags_and_aliases_in_typed_settings_still_work(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            "audio:\n  volume: !!float 2\n"
            "live:\n  chunk_ms: !!int 200\n  keyterms_prompt: &terms [Pi, AssemblyAI]\n"
            "  prompt: !!str 2024-01-01\n  domain: 2024-01-01\n"
            "upload:\n  keyterms_prompt: *terms\n"
            "  extra: {custom_spelling: [{from: [Pie], to: Pi}], boost: 1.5, 'on': null}\n"
            "state_dir: state/../here\n",
        )
    )
    assert config.audio.volume == 2.0 and config.live.chunk_ms == 200
    assert config.upload.keyterms_prompt == ["Pi", "AssemblyAI"]
    assert config.live.prompt == config.live.domain == "2024-01-01"  # text as written
    assert config.upload.extra == {
        "custom_spelling": [{"from": ["Pie"], "to": "Pi"}],
        "boost": 1.5,
        "on": None,
    }
    assert config.state_dir == tmp_path / "state/../here"


def test_free_form_nesting_up_to_the_limit_loads(tmp_path: Path) -> None:
    depth = LOAD_LIMITS.max_free_form_depth
    config = load_config(write(tmp_path, nested_free_form(depth)))
    value = config.upload.extra["a"]
    for _ in range(depth - 2):
        (value,) = value
    assert value == []


# -- the key file --------------------------------------------------------------------


def key_file(tmp_path: Path, mode: int) -> Path:
    path = tmp_path / "api-key"
    path.write_text(KEY + "\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_key_file_readable_by_others_is_warned_about(tmp_path: Path, mode: int) -> None:
    key = key_file(tmp_path, mode)
    path = write(tmp_path, f"mode: live\nauth:\n  api_key_file: {key}\n")
    config = load_config(path)
    assert config.api_key is not None and config.api_key.reveal() == KEY
    (warning,) = config.warnings
    assert str(warning) == (
        f"{path}:3: auth.api_key_file: the AssemblyAI API key: {key} is readable by others "
        f"(mode {mode:04o}); chmod 600 it"
    )
    assert KEY not in str(warning)


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_private_key_file_gets_no_warning(tmp_path: Path, mode: int) -> None:
    key = key_file(tmp_path, mode)
    config = load_config(write(tmp_path, f"auth:\n  api_key_file: {key}\n"))
    assert config.warnings == []


def test_the_broker_credential_file_is_warned_about_too(tmp_path: Path) -> None:
    cred = key_file(tmp_path, 0o644)
    config = load_config(
        write(
            tmp_path,
            "auth:\n  token_broker:\n    url: https://example.org/t\n"
            f"    credential_file: {cred}\n",
        )
    )
    assert [w.key for w in config.warnings] == ["auth.token_broker.credential_file"]


def test_a_huge_key_file_is_refused_unread(tmp_path: Path) -> None:
    path = write(tmp_path, "auth:\n  api_key_file: /dev/zero\n")
    error = refused(path)
    assert f"{path}:2: auth.api_key_file: " in str(error) and "larger than the limit" in str(error)


def test_the_daemon_logs_the_key_file_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    key = key_file(tmp_path, 0o644)
    path = write(tmp_path, f"auth:\n  api_key_file: {key}\n")
    monkeypatch.setattr("appliance.app.run_daemon", lambda config: 0)
    monkeypatch.setattr("appliance.logs.setup_logging", lambda *a, **k: None)
    monkeypatch.setattr(os, "umask", lambda mask: 0o022)  # the daemon's umask: its own test
    with caplog.at_level(logging.WARNING, logger="appliance"):
        assert main(["run", "--config", str(path)]) == 0
    assert f"{path}:2: auth.api_key_file: " in caplog.text
    assert "readable by others" in caplog.text


# -- appliance check and the command line --------------------------------------------


def check(path: Path) -> tuple[int, str]:
    out = io.StringIO()
    args = argparse.Namespace(config=str(path), verbose=False, tone=False, seconds=0.0)
    return run_check(args, out=out), out.getvalue()


def test_check_names_the_escaping_state_dir_with_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "mode: live\nstate_dir: ../../../elsewhere\n")
    code, output = check(path)
    assert code == 3
    assert "✗ configuration: 1 problem(s)" in output
    assert f"{path}:2: state_dir: '../../../elsewhere' climbs out of {tmp_path}" in output


def test_check_shows_the_key_file_warning(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed: the cloud check says offline at once
    key = key_file(tmp_path, 0o644)
    path = write(
        tmp_path,
        f"endpoints:\n  base_url: http://127.0.0.1:{port}\nauth:\n  api_key_file: {key}\n"
        f"audio:\n  source: file\n  input_file: {tmp_path / 'missing.wav'}\n  sink: none\n"
        f"button:\n  enabled: false\nstate_dir: {tmp_path / 'state'}\n"
        "spool:\n  min_free_bytes: 0\n",
    )
    _, output = check(path)
    assert f"! credential: {path}:4: auth.api_key_file: the AssemblyAI API key: {key} " in output
    assert "chmod 600 it" in output


CLI_ROWS = [
    r for r in REFUSED if r[0] in ("!!int abc", ".nan volume", "alias bomb in upload.extra")
]


@pytest.mark.parametrize(
    ("text", "line", "key"), [r[1:4] for r in CLI_ROWS], ids=[r[0] for r in CLI_ROWS]
)
def test_appliance_run_exits_3_without_a_traceback(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    text: str,
    line: int,
    key: str,
) -> None:
    def never(config: Config) -> int:
        raise AssertionError("the daemon must not start on a broken configuration")

    monkeypatch.setattr("appliance.app.run_daemon", never)
    path = write(tmp_path, text)
    assert main(["run", "--config", str(path)]) == 3
    err = capsys.readouterr().err
    assert f"{path}:{line}: {key}: " in err and "Traceback" not in err
