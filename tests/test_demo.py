"""The README's first command: `appliance demo` runs every mode and gets the digits back."""

from __future__ import annotations

import subprocess
import sys


def test_demo_runs_every_mode_and_reports_success() -> None:
    proc = subprocess.run([sys.executable, "-m", "appliance", "demo", "--digits", "2 7"],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "summary: live ok, record ok, agent ok" in proc.stdout
    assert "final: Two." in proc.stdout
