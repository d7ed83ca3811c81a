#!/usr/bin/env bash
# Install, then start on the embedded (untrained) demo model unless a model is configured.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m backend "$@"
