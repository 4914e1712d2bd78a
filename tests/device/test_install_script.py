"""scripts/install.sh: shellcheck clean, dry runs change nothing, re-runs are idempotent.

Its decisions on a machine it does not own (apt, the gpio group, udev, systemd) are
checked through PATH shims that answer the queries and log what would change.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install.sh"
TIMEOUT = 60
FAKE_KEY = "sk-test-0123456789abcdef"


def install(
    *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=env,
        timeout=TIMEOUT,
    )


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


SHELL_SCRIPTS = [SCRIPT, *sorted((ROOT / "scripts").glob("*.sh")), ROOT / ".ci" / "run"]


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: p.name)
def test_shellcheck_is_clean(script: Path) -> None:
    result = subprocess.run(
        ["shellcheck", str(script)], capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, result.stdout


def test_dry_run_into_scratch_root_plans_everything_and_changes_nothing(tmp_path: Path) -> None:
    result = install("--root", str(tmp_path), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert tree(tmp_path) == []
    plan = result.stdout
    assert f"python3 -m venv --system-site-packages {tmp_path}/opt/appliance/venv" in plan
    assert f"pip install --quiet --upgrade {ROOT}" in plan
    assert f"{tmp_path}/etc/systemd/system/appliance.service" in plan
    assert f"{tmp_path}/etc/appliance/config.yaml" in plan
    assert f"systemctl --root={tmp_path} enable appliance.service" in plan


@pytest.mark.skipif(shutil.which("systemctl") is None, reason="systemctl not installed")
def test_scratch_root_install_is_idempotent_and_uninstall_keeps_data(tmp_path: Path) -> None:
    result = install("--root", str(tmp_path), "--no-venv")
    assert result.returncode == 0, result.stderr
    unit = tmp_path / "etc/systemd/system/appliance.service"
    config = tmp_path / "etc/appliance/config.yaml"
    assert unit.read_text() == (ROOT / "systemd/appliance.service").read_text()
    assert config.read_text() == (ROOT / "config/appliance.yaml").read_text()
    assert (tmp_path / "etc/systemd/system/multi-user.target.wants/appliance.service").is_symlink()

    # The owner edits the config; installing again (an update) must not overwrite it.
    config.write_text("mode: record\n")
    again = install("--root", str(tmp_path), "--no-venv")
    assert again.returncode == 0, again.stderr
    assert config.read_text() == "mode: record\n"
    assert "keeping existing" in again.stdout

    recordings = tmp_path / "var/lib/appliance/spool"
    recordings.mkdir(parents=True)
    (recordings / "take1.wav").write_bytes(b"RIFF")
    removed = install("--root", str(tmp_path), "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not unit.exists()
    assert not (tmp_path / "etc/systemd/system/multi-user.target.wants/appliance.service").exists()
    assert config.exists() and (recordings / "take1.wav").exists()

    purged = install("--root", str(tmp_path), "--uninstall", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not config.exists() and not recordings.exists()


def test_the_key_is_read_from_a_file_or_stdin_and_never_shown(tmp_path: Path) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text(FAKE_KEY + "\n")
    result = install(
        "--dry-run", "--no-image", "--no-packages", "--no-venv", "--api-key-file", str(key_file)
    )
    assert result.returncode == 0, result.stderr
    assert "systemd-creds encrypt --name=assemblyai-api-key - " in result.stdout
    assert f"< {key_file}" in result.stdout
    assert FAKE_KEY not in result.stdout + result.stderr

    piped = install(
        "--dry-run", "--no-image", "--no-packages", "--no-venv", "--api-key-stdin", stdin=FAKE_KEY
    )
    assert piped.returncode == 0, piped.stderr
    assert FAKE_KEY not in piped.stdout + piped.stderr


def test_there_is_no_way_to_pass_the_key_in_argv() -> None:
    result = install("--dry-run", "--api-key", FAKE_KEY)
    assert result.returncode == 2
    assert FAKE_KEY not in result.stdout + result.stderr


# ------------------------------------------------ decisions, through PATH shims


def apt_packages() -> list[str]:
    """The Debian packages the script asks apt for besides python3-lgpio."""
    listed = re.search(r"APT_PACKAGES=\(([^)]*)\)", SCRIPT.read_text())
    assert listed is not None
    return listed.group(1).split()


APT_PACKAGES = apt_packages()
RULES = ROOT / "systemd" / "90-appliance-gpio.rules"
PI_OS_RULES = """\
SUBSYSTEM=="*gpiomem*", GROUP="gpio", MODE="0660"
SUBSYSTEM=="gpio", GROUP="gpio", MODE="0660"
"""

LOG = 'echo "${0##*/} $*" >> "$SHIM_LOG"\n'
SHIMS = {
    # dpkg-query -W -f='${Status}' PACKAGE
    "dpkg-query": """\
for p in $SHIM_INSTALLED; do
  [ "$p" = "$3" ] && printf 'install ok installed' && exit 0
done
exit 1
""",
    # apt-cache policy PACKAGE: a candidate only for what the shim's archive offers
    "apt-cache": """\
for p in $SHIM_OFFERED; do
  [ "$p" = "$2" ] && printf '%s:\\n  Installed: (none)\\n  Candidate: 1.0-1\\n' "$p"
done
exit 0
""",
    # getent group NAME
    "getent": """\
for g in $SHIM_GROUPS; do
  [ "$g" = "$2" ] && echo "$g:x:990:" && exit 0
done
exit 2
""",
    # groupadd --system [--prefix DIR] NAME: as the real one, the group then exists in DIR
    "groupadd": LOG + '[ "$2" = --prefix ] && echo "$4:x:990:" >> "$3/etc/group"\nexit 0\n',
    "apt-get": LOG,
    "systemctl": LOG,
    "udevadm": LOG,
    "systemd-creds": LOG,
}


class Shims:
    """A PATH directory of stand-ins for the system tools install.sh asks or changes."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir()
        for name, body in SHIMS.items():
            shim = directory / name
            shim.write_text("#!/bin/sh\n" + body)
            shim.chmod(0o755)
        self.log = directory / "calls.log"
        self.log.touch()
        self.env = {
            **os.environ,
            "PATH": f"{directory}:{os.environ['PATH']}",
            "SHIM_LOG": str(self.log),
            "SHIM_INSTALLED": " ".join([*APT_PACKAGES, "python3-lgpio"]),
            "SHIM_OFFERED": "",
            "SHIM_GROUPS": "audio gpio",
        }

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()


@pytest.fixture
def shims(tmp_path: Path) -> Shims:
    return Shims(tmp_path / "shims")


def pip_line(plan: str) -> str:
    return next(line for line in plan.splitlines() if " -m pip install " in line)


def test_image_mode_enables_the_unit_without_reloading_or_starting(shims: Shims) -> None:
    result = install("--image", "--dry-run", "--no-venv", env=shims.env)
    assert result.returncode == 0, result.stderr
    assert "+ systemctl enable appliance.service" in result.stdout
    assert "daemon-reload" not in result.stdout
    assert "restart" not in result.stdout and "systemctl start" not in result.stdout
    assert "image mode: enabled, not started" in result.stdout


def test_no_image_keeps_the_running_device_install(shims: Shims) -> None:
    result = install("--no-image", "--dry-run", "--no-venv", env=shims.env)
    assert result.returncode == 0, result.stderr
    plan = result.stdout
    assert plan.index("+ systemctl daemon-reload") < plan.index("+ systemctl restart appliance")


@pytest.mark.skipif(Path("/run/systemd/system").exists(), reason="systemd runs here")
def test_without_a_running_systemd_image_mode_is_the_default(shims: Shims) -> None:
    result = install("--dry-run", "--no-venv", env=shims.env)
    assert result.returncode == 0, result.stderr
    assert "image mode: enabled, not started" in result.stdout
    assert "daemon-reload" not in result.stdout


def test_image_mode_does_not_encrypt_the_key_into_the_image(shims: Shims, tmp_path: Path) -> None:
    key_file = tmp_path / "key.txt"
    key_file.write_text(FAKE_KEY)
    result = install(
        "--image", "--dry-run", "--no-venv", "--api-key-file", str(key_file), env=shims.env
    )
    assert result.returncode == 0, result.stderr
    assert "systemd-creds" not in result.stdout
    assert "not encrypting the API key" in result.stdout
    assert FAKE_KEY not in result.stdout + result.stderr


def test_an_image_built_without_a_key_says_to_add_it_on_each_device(
    shims: Shims, tmp_path: Path
) -> None:
    result = install("--root", str(tmp_path / "image"), "--dry-run", "--no-venv", env=shims.env)
    assert result.returncode == 0, result.stderr
    assert "no API key in the image: on each device run install.sh" in result.stdout
    assert "run again with" not in result.stdout


def test_lgpio_comes_from_pypi_where_apt_has_no_python3_lgpio(shims: Shims) -> None:
    shims.env["SHIM_INSTALLED"] = " ".join(p for p in APT_PACKAGES if p != "python3-numpy")
    shims.env["SHIM_OFFERED"] = "python3-numpy"
    result = install("--image", "--dry-run", env=shims.env)
    assert result.returncode == 0, result.stderr
    assert "+ env DEBIAN_FRONTEND=noninteractive apt-get install" in result.stdout
    apt_line = next(line for line in result.stdout.splitlines() if "apt-get install" in line)
    assert apt_line.endswith(" python3-numpy")
    assert "python3-lgpio is not in this system's archives" in result.stdout
    assert pip_line(result.stdout).endswith(f"{ROOT}[mqtt] lgpio")


def test_lgpio_comes_from_apt_where_the_archive_has_it(shims: Shims) -> None:
    shims.env["SHIM_INSTALLED"] = " ".join(APT_PACKAGES)
    shims.env["SHIM_OFFERED"] = "python3-lgpio"
    result = install("--image", "--dry-run", env=shims.env)
    assert result.returncode == 0, result.stderr
    apt_line = next(line for line in result.stdout.splitlines() if "apt-get install" in line)
    assert apt_line.endswith(" python3-lgpio")
    assert pip_line(result.stdout).endswith(f"{ROOT}[mqtt]")


def test_an_installed_python3_lgpio_means_no_apt_and_no_pip(shims: Shims) -> None:
    result = install("--image", "--dry-run", env=shims.env)
    assert result.returncode == 0, result.stderr
    assert "apt-get" not in result.stdout
    assert pip_line(result.stdout).endswith(f"{ROOT}[mqtt]")


def test_the_gpio_group_is_added_only_where_missing(shims: Shims) -> None:
    present = install("--image", "--dry-run", "--no-venv", env=shims.env)
    assert "+ groupadd" not in present.stdout
    assert "group gpio exists" in present.stdout

    shims.env["SHIM_GROUPS"] = "audio"
    missing = install("--image", "--dry-run", "--no-venv", env=shims.env)
    assert missing.returncode == 0, missing.stderr
    assert "+ groupadd --system gpio" in missing.stdout


def debian_tree(root: Path) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "group").write_text("root:x:0:\naudio:x:29:\n")


def test_a_plain_debian_tree_gets_the_group_and_the_rules_once(
    shims: Shims, tmp_path: Path
) -> None:
    tree_root = tmp_path / "image"
    debian_tree(tree_root)
    rules = tree_root / "etc/udev/rules.d/90-appliance-gpio.rules"
    for _ in range(2):
        result = install("--root", str(tree_root), "--no-venv", env=shims.env)
        assert result.returncode == 0, result.stderr
        assert rules.read_text() == RULES.read_text()
    assert [c for c in shims.calls() if c.startswith("groupadd")] == [
        f"groupadd --system --prefix {tree_root} gpio"
    ]
    assert "group gpio exists" in result.stdout

    removed = install("--root", str(tree_root), "--uninstall", env=shims.env)
    assert removed.returncode == 0, removed.stderr
    assert not rules.exists()
    assert "gpio:" in (tree_root / "etc/group").read_text()


def test_raspberry_pi_os_rules_are_left_alone(shims: Shims, tmp_path: Path) -> None:
    tree_root = tmp_path / "image"
    debian_tree(tree_root)
    (tree_root / "etc/group").write_text("audio:x:29:\ngpio:x:997:\n")
    vendor_rules = tree_root / "usr/lib/udev/rules.d/99-com.rules"
    vendor_rules.parent.mkdir(parents=True)
    vendor_rules.write_text(PI_OS_RULES)
    result = install("--root", str(tree_root), "--no-venv", env=shims.env)
    assert result.returncode == 0, result.stderr
    assert not (tree_root / "etc/udev/rules.d/90-appliance-gpio.rules").exists()
    assert "udev rules already give group gpio the GPIO devices" in result.stdout
    assert not [c for c in shims.calls() if c.startswith("groupadd")]


def test_rules_covering_only_gpiomem_still_get_ours(shims: Shims, tmp_path: Path) -> None:
    tree_root = tmp_path / "image"
    debian_tree(tree_root)
    partial = tree_root / "etc/udev/rules.d/99-local.rules"
    partial.parent.mkdir(parents=True)
    partial.write_text(
        'SUBSYSTEM=="*gpiomem*", GROUP="gpio", MODE="0660"\n# SUBSYSTEM=="gpio", GROUP="gpio"\n'
    )
    result = install("--root", str(tree_root), "--no-venv", env=shims.env)
    assert result.returncode == 0, result.stderr
    assert (tree_root / "etc/udev/rules.d/90-appliance-gpio.rules").read_text() == RULES.read_text()


def test_a_running_device_reloads_udev_after_adding_the_rules(shims: Shims) -> None:
    result = install("--no-image", "--dry-run", "--no-venv", env=shims.env)
    assert result.returncode == 0, result.stderr
    if (
        Path("/etc/udev/rules.d/90-appliance-gpio.rules")
    ).exists() or "already give" in result.stdout:
        pytest.skip("this machine already has gpio rules")
    assert (
        "+ install -D -m 0644 " + str(RULES) + " /etc/udev/rules.d/90-appliance-gpio.rules"
        in result.stdout
    )
    assert "+ udevadm control --reload-rules" in result.stdout
