"""The loader on random input: it loads or raises ConfigError, and nothing else escapes.

Three sources of input: random YAML documents (shaped like the schema, or not),
random text, and random mutations of ``config/appliance.yaml``, the file users
start from. Each case is also judged quickly; the hostile table in
``test_config_hostile.py`` holds the inputs that once escaped.
"""

from __future__ import annotations

import dataclasses
import datetime
import gc
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance import yamlread
from appliance.config import Config, ConfigError, load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "appliance.yaml"
EXAMPLE_LINES = EXAMPLE.read_text().splitlines(keepends=True)
#: One case takes a few milliseconds of CPU. CPU time, not wall time (on a loaded machine
#: the wall clock counts the other processes' turns), and with the garbage collector paused
#: (one full collection of all Hypothesis keeps in memory can take a second by itself).
CASE_BUDGET_S = 1.0
FAST = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _names(cls: type) -> set[str]:
    names: set[str] = set()
    for field in dataclasses.fields(cls):
        if field.metadata.get("internal"):
            continue
        names.add(field.name)
        default = field.default_factory() if callable(field.default_factory) else field.default
        if dataclasses.is_dataclass(default):
            names |= _names(type(default))
    return names


SETTING_NAMES = sorted(_names(Config))
SECTION_NAMES = sorted(
    f.name for f in dataclasses.fields(Config) if f.default_factory is not dataclasses.MISSING
)

# What users and attackers type in a value: YAML syntax, tags, aliases, odd numbers, paths.
TOKENS = [
    ".nan", ".inf", "-.inf", "!!int abc", "!!float xyz", "!!bool maybe", "!!timestamp x",
    "!!null foo", "!foo bar", "!!python/object/apply:os.system ['true']", "!!binary aGk=",
    "!!set {a}", "!!omap [a: 1]", "!<tag:x,2000:y> z", "&a", "*a", "&a [*a]", "&b {x: *b}",
    "*undefined", "~", "null", "", "[", "]", "{", "}", "{a: 1}", "[1, 2]", "[" * 12 + "]" * 12,
    "'", '"', "'quoted'", "0x_", "0b", "0o7", "1e999", "-0", "1_000", "1:30", "9" * 40,
    "2024-13-45", "2024-02-29", "2001-12-14t21:59:43.10-05:00", "<<: *a", "<<", "? [a]",
    "- x", "|", ">-", "#", ":", ": :", "---", "...", "%YAML 1.1", "\t", "yes", "Off", "y",
    "../../x", "~/x", "/dev/zero", "/", "\x00", "\x07", "\ufeff", "é", "\U0001f600",
    "\\u0000", "%", "@", "`", "http://203.0.113.5", "ws://127.0.0.1:1/v3/ws",
]  # fmt: skip


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="config-property-") as name:
        yield Path(name)


def judge(workdir: Path, text: str | bytes, *, resolve_secrets: bool = True) -> None:
    """Load ``text`` as a config file: a Config or a ConfigError, quickly, nothing else."""
    path = workdir / "config.yaml"
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogatepass")
    path.write_bytes(text)
    gc.disable()
    start = time.process_time()
    try:
        config = load_config(path, resolve_secrets=resolve_secrets)
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert str(problem).startswith(f"{path}"), str(problem)
    else:
        assert isinstance(config, Config)
    finally:
        elapsed = time.process_time() - start
        gc.enable()
    assert elapsed < CASE_BUDGET_S


# -- random documents ----------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(TOKENS),
    st.dates(),
    st.datetimes(timezones=st.sampled_from([None, datetime.UTC])),
)
keys = st.one_of(st.sampled_from(SETTING_NAMES), st.text(max_size=10), st.integers(), st.none())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(keys, inner, max_size=5),
    ),
    max_leaves=30,
)
schema_shaped = st.dictionaries(
    st.sampled_from([*SECTION_NAMES, "mode", "state_dir"]),
    st.one_of(st.dictionaries(st.sampled_from(SETTING_NAMES), values, max_size=6), values),
    max_size=6,
)


@settings(FAST, max_examples=1000)
@given(document=st.one_of(schema_shaped, values), flow=st.booleans())
def test_random_yaml_documents_load_or_are_refused(workdir: Path, document, flow: bool) -> None:
    judge(workdir, yaml.safe_dump(document, default_flow_style=flow, allow_unicode=True))


YAMLISH = st.text(
    alphabet=st.one_of(
        st.sampled_from(list(" \n\t-:?,[]{}#&*!|>'\"%@`~.0123456789")), st.characters()
    ),
    max_size=300,
)


@settings(FAST, max_examples=500)
@given(text=YAMLISH)
def test_random_text_loads_or_is_refused(workdir: Path, text: str) -> None:
    judge(workdir, text, resolve_secrets=False)


# -- mutations of the example file ---------------------------------------------------


@st.composite
def mutated_example(draw: st.DrawFn) -> str:
    lines = list(EXAMPLE_LINES)
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        lines = lines or ["\n"]
        i = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        line = lines[i]
        token = draw(st.one_of(st.sampled_from(TOKENS), st.text(max_size=12)))
        op = draw(
            st.sampled_from(
                [
                    "replace value", "delete", "duplicate", "comment out", "uncomment",
                    "indent", "dedent", "insert token", "insert setting", "swap", "truncate",
                ]
            )
        )  # fmt: skip
        if op == "replace value" and ":" in line:
            key, _, rest = line.partition(":")
            comment = rest[rest.index("#") :] if "#" in rest else "\n"
            lines[i] = f"{key}: {token}  {comment}"
        elif op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, line)
        elif op == "comment out":
            lines[i] = "# " + line
        elif op == "uncomment":
            lines[i] = line.replace("# ", "", 1)
        elif op == "indent":
            lines[i] = "  " + line
        elif op == "dedent":
            lines[i] = line.removeprefix("  ")
        elif op == "insert token":
            at = draw(st.integers(min_value=0, max_value=len(line)))
            lines[i] = line[:at] + token + line[at:]
        elif op == "insert setting":
            indent = line[: len(line) - len(line.lstrip(" "))]
            name = draw(st.sampled_from(SETTING_NAMES))
            lines.insert(i, f"{indent}{name}: {token}\n")
        elif op == "swap":
            j = draw(st.integers(min_value=0, max_value=len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "truncate":
            lines[i:] = [line[: draw(st.integers(min_value=0, max_value=len(line)))]]
    return "".join(lines)


@settings(FAST, max_examples=1500)
@given(text=mutated_example())
def test_mutations_of_the_example_load_or_are_refused(workdir: Path, text: str) -> None:
    judge(workdir, text)


@pytest.mark.skipif(not yamlread.HAVE_LIBYAML, reason="the default parser is already PyYAML's")
@settings(FAST, max_examples=300)
@given(text=st.one_of(mutated_example(), YAMLISH))
def test_pyyamls_own_parser_also_loads_or_refuses(
    workdir: Path, text: str, monkeypatch_module: pytest.MonkeyPatch
) -> None:
    judge(workdir, text)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    """PyYAML's pure-Python parser in place of libyaml's, for the test that asks for it."""
    with pytest.MonkeyPatch.context() as patch:
        real = yamlread.compose
        patch.setattr(
            "appliance.config.compose", lambda text, **kw: real(text, libyaml=False, **kw)
        )
        yield patch
