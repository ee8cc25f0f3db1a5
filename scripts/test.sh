#!/usr/bin/env bash
# Runs every test of callpulse on a fresh machine: installs what the tests need, then runs them.
#  - LiveKit's own Python SDK (livekit-api), in ./.venv, signs webhooks for the end-to-end test.
#  - schemathesis (PyPI), in ./.venv, runs the property-based API test against the OpenAPI document.
#  - cargo-nextest runs the Rust tests when present; plain `cargo test` otherwise.
#  - Debian's chromium and Node.js with playwright-core (tests/browser) run the dashboard tests;
#    screenshots land in target/screenshots/.
#  - PostgreSQL (the store tests on both backends, partitions, retention, two instances on one
#    database): the installed cluster is started if stopped, Debian's postgresql installed if
#    missing. CALLPULSE_TEST_POSTGRES names an admin URL (default: user postgres on 127.0.0.1).
#  - Debian's prometheus-alertmanager is the real Alertmanager the alerting test delivers to;
#    Debian's prometheus gives promtool and the real Prometheus that scrapes /metrics.
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

apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}
missing=()
[ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ] || missing+=(chromium)
[ -x "${CALLPULSE_ALERTMANAGER:-/usr/bin/prometheus-alertmanager}" ] || missing+=(prometheus-alertmanager)
{ [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; } || missing+=(prometheus)
{ command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; } || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  apt_install "${missing[@]}"
fi
echo "== PostgreSQL"
export CALLPULSE_TEST_POSTGRES="${CALLPULSE_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}"
command -v pg_ctlcluster >/dev/null 2>&1 || apt_install postgresql postgresql-client
if ! pg_isready -q -h 127.0.0.1 -p 5432; then
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
  if [ -z "$version" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    pg_createcluster "$version" main
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
if ! psql "$CALLPULSE_TEST_POSTGRES" -qAtc 'SELECT 1' >/dev/null 2>&1; then
  # A fresh cluster asks TCP clients for a password: give the postgres user one for the tests.
  runuser -u postgres -- psql -qc "ALTER USER postgres PASSWORD 'callpulse-tests'"
  export CALLPULSE_TEST_POSTGRES="postgres://postgres:callpulse-tests@127.0.0.1:5432/postgres"
  psql "$CALLPULSE_TEST_POSTGRES" -qAtc 'SELECT 1' >/dev/null
fi
# Databases left by an interrupted run.
psql "$CALLPULSE_TEST_POSTGRES" -qAtc "SELECT datname FROM pg_database WHERE datname LIKE 'callpulse_test_%'" |
  while read -r db; do psql "$CALLPULSE_TEST_POSTGRES" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"; done

echo "== installing the browser test requirements (playwright-core)"
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

# The fuzz targets (crates/server/tests/fuzz.rs) run this many cases each: about 40 s here.
export CALLPULSE_FUZZ_CASES=${CALLPULSE_FUZZ_CASES:-20000}

status=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast || status=$?
else
  cargo test --workspace --no-fail-fast || status=$?
fi

echo "== dashboard tests in headless chromium"
cargo build -q -p callpulse --bin callpulse
(cd tests/browser && node --test --test-concurrency=1) || status=$?

echo "== property-based API test: schemathesis against GET /api/v1/openapi.json (no 5xx allowed)"
.venv/bin/pip install -q --disable-pip-version-check -r tests/api/requirements.txt
api_dir=$(mktemp -d)
api_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
target/debug/callpulse serve --demo --demo-history-days 2 --listen "127.0.0.1:$api_port" \
  --metrics-addr off --database "sqlite://$api_dir/callpulse.db" >"$api_dir/serve.log" 2>&1 &
api_pid=$!
python3 - "$api_port" <<'PY'
import sys, time, urllib.request
for _ in range(150):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/healthz", timeout=1)
        break
    except OSError:
        time.sleep(0.2)
PY
.venv/bin/schemathesis run "http://127.0.0.1:$api_port/api/v1/openapi.json" \
  --checks not_a_server_error --workers 2 --max-time "${CALLPULSE_SCHEMATHESIS_SECONDS:-90}" \
  --warnings off || { status=$?; tail -20 "$api_dir/serve.log"; }
kill "$api_pid" 2>/dev/null || true
wait "$api_pid" 2>/dev/null || true
rm -rf "$api_dir"
exit $status
