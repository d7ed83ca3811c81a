#!/usr/bin/env bash
# Install with the test extra (reference oracle: torch CPU + rwkv), then lint and run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
.venv/bin/ruff check backend tests bench
.venv/bin/python -m pytest -q "$@"
