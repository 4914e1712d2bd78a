#!/usr/bin/env python3
"""Benchmarks: the cost and latency of every mode against the obvious alternative.

    scripts/bootstrap.sh --dev && .venv/bin/pip install -e '.[dev,bench]'
    .venv/bin/python scripts/bench.py [--quick] [--minutes N] [--reps N] [--soak]
    sudo .venv/bin/python scripts/bench.py --budget [--budget-minutes N]   # Pi-class budget

Runs against a private PulseAudio (null sinks) and the local emulator on
loopback, writes BENCHMARKS.md. The work is in scripts/bench/runner.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.bench.runner import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
