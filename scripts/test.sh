#!/usr/bin/env bash
# Install everything the tests need (Debian packages, .venv with the dev extra),
# then lint, type-check, check the layering and run the whole suite. Extra arguments go to
# pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh --test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy          # [tool.mypy] in pyproject.toml: --strict on appliance/
.venv/bin/lint-imports  # [tool.importlinter]: the layers of README "How it is built"
exec .venv/bin/python -m pytest "$@"
