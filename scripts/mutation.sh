#!/usr/bin/env bash
# Mutation testing of the protocol cores and the connection layer (slow; not in the suite).
# Mutants are made in a scratch copy of the tree; the working tree is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/mutate.py "$@"
