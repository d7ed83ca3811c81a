#!/usr/bin/env bash
# Install, then start on the embedded demo model (a tiny RWKV-7 trained on public-domain text, unpacked from
# assets/models/demo-rwkv7-tiny.st.xz at first use) unless a model is configured.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m backend "$@"
