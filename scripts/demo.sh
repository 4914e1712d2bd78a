#!/usr/bin/env bash
# Install what the demo needs, then run the appliance end to end on this machine:
# the local AssemblyAI emulator, sample microphone audio, a simulated button.
# Extra arguments go to `appliance demo` (see `appliance demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --dev
exec .venv/bin/appliance demo "$@"
