#!/usr/bin/env bash
# Installs everything the server and its tests need on a fresh Debian machine:
# the Vulkan loader and Mesa's drivers (lavapipe runs wgpu on the CPU where no GPU driver exists), a C compiler,
# a virtual environment .venv with the package (and, with --test, its test extra), Node.js and the web UI's
# vite build (backend/static/, served at /), and, with --test, Debian's chromium for the browser tests and haproxy
# for the replica tests.
set -euo pipefail
cd "$(dirname "$0")/.."

extra=""
testing=false
[ "${1:-}" = "--test" ] && extra="[test]" && testing=true

need_apt=()
dpkg -s libvulkan1 >/dev/null 2>&1 || need_apt+=(libvulkan1)
dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || need_apt+=(mesa-vulkan-drivers)
if ! command -v node >/dev/null 2>&1; then need_apt+=(nodejs npm)
elif ! command -v npm >/dev/null 2>&1; then need_apt+=(npm); fi
# a C compiler and Python's headers build the tokenizer's C matcher (without them it falls back, ~10x slower)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
python3 -c 'import os, sysconfig; raise SystemExit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
  || need_apt+=(python3-dev)
# the browser tests drive Debian's chromium (never a downloaded browser); a font so pages render text
$testing && { [ -x /usr/bin/chromium ] || need_apt+=(chromium fonts-dejavu-core); }
# the replica tests put Debian's HAProxy in front of two servers with deploy/haproxy.cfg
$testing && { [ -x /usr/sbin/haproxy ] || need_apt+=(haproxy); }
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".${extra}"

# The web UI: dependencies from package-lock.json, then the vite build into backend/static/ (package data),
# each redone only when its inputs changed. vite 7 needs Node.js >= 20.19 (Debian 13's; Debian 12's is 18).
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 19) ? 0 : 1)'; then
  echo "setup.sh: the web UI needs Node.js >= 20.19, found $(node --version); the server will serve the API only" >&2
  $testing && exit 1
  exit 0
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
if [ ! -f backend/static/index.html ] || [ -n "$(find frontend package.json package-lock.json -newer backend/static/index.html -print -quit)" ]; then
  npm run --silent build
fi
