#!/usr/bin/env bash
# Runs every test of callpulse on a fresh machine: installs what the tests need, then runs them.
#  - LiveKit's own Python SDK (livekit-api), in ./.venv, signs webhooks for the end-to-end test.
#  - cargo-nextest runs the Rust tests when present; plain `cargo test` otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v python3 >/dev/null 2>&1; then
  echo "== installing python3"
  apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  python3 -m venv .venv || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && python3 -m venv .venv; }
fi
echo "== installing the Python test requirements"
.venv/bin/pip install -q --disable-pip-version-check -r crates/server/tests/e2e/requirements.txt
export CALLPULSE_TEST_PYTHON="$PWD/.venv/bin/python"

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
