#!/usr/bin/env bash
# Install with the test extra (reference oracle: torch CPU + rwkv) and chromium, then lint and run every test:
# the UI's type check and unit tests (vitest), then pytest (engine, server, and the browser tests in tests/e2e),
# then (on a full run) the wheel smoke test: sdist -> wheel -> fresh venv -> ai00-server, outside the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
.venv/bin/ruff check backend tests bench
npm run --silent check
npm test --silent
.venv/bin/python -m pytest -q "$@"
if [ $# -eq 0 ]; then
  .venv/bin/python scripts/wheel_smoke.py
fi
