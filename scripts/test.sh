#!/usr/bin/env bash
# Install everything the tests need (Debian packages, .venv with the dev extra),
# then lint and run the whole suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --test
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
