#!/usr/bin/env bash
# Alert drill: a carrier outage fires high_error_rate into a real Alertmanager, and recovery
# resolves it, with the built-in rules (error rate > 5 % over 15 min, >= 20 calls, for 2 min).
#
#   bash scripts/alert-drill.sh [outage_seconds=180] [recovery_seconds=1080]
#
# Starts Debian's prometheus-alertmanager and `callpulse serve` on free loopback ports, sends
# simulated traffic with half the calls failing at the trunk, then normal traffic, and prints
# what Alertmanager shows every 15 s. Everything stops at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
outage=${1:-180}
recovery=${2:-1080}
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
am_port=$(free_port)
cp_port=$(free_port)
cargo build -q --release --bin callpulse
bin=target/release/callpulse

cat > "$work/alertmanager.yml" <<EOF
route:
  receiver: nobody
  group_wait: 1s
receivers:
  - name: nobody
EOF
prometheus-alertmanager --config.file="$work/alertmanager.yml" --storage.path="$work/am" \
  --web.listen-address="127.0.0.1:$am_port" --cluster.listen-address= >"$work/am.log" 2>&1 &
pids+=($!)

cat > "$work/callpulse.toml" <<EOF
[alerts]
dashboard_url = "http://127.0.0.1:$cp_port/"
[[alerts.channels]]
name = "alertmanager"
type = "alertmanager"
url = "http://127.0.0.1:$am_port"
EOF
keys="drill:drill-secret-that-is-long-enough-0001"
"$bin" --config "$work/callpulse.toml" serve --listen "127.0.0.1:$cp_port" --metrics-addr off \
  --database "sqlite://$work/callpulse.db" --livekit-keys "$keys" --events-token drill >"$work/callpulse.log" 2>&1 &
pids+=($!)
sleep 2

watch_alertmanager() {
  while sleep 15; do
    state=$(curl -s "http://127.0.0.1:$am_port/api/v2/alerts" | python3 -c '
import json, sys
alerts = [a for a in json.load(sys.stdin) if a["labels"].get("alertname") == "high_error_rate"]
print(", ".join(a["status"]["state"] + " since " + a["startsAt"] + ": " + a["annotations"]["summary"] for a in alerts) or "no high_error_rate alert")')
    echo "$(date -u +%T) alertmanager: $state"
  done
}
watch_alertmanager &
pids+=($!)

simulate() {
  "$bin" simulate --url "http://127.0.0.1:$cp_port" --livekit-keys "$keys" --events-token drill \
    --rate 2 --speed 10 --duration "$1" --failure-share "$2" >>"$work/simulate.log" 2>&1
}
echo "$(date -u +%T) outage: ${outage}s with half the calls failing at the trunk"
simulate "$outage" 0.5
echo "$(date -u +%T) recovery: ${recovery}s of normal traffic"
simulate "$recovery" 0
sleep 30
echo "$(date -u +%T) callpulse notices:"
curl -s "http://127.0.0.1:$cp_port/api/v1/alerts" | python3 -c '
import json, sys
for n in reversed(json.load(sys.stdin)["recent"]):
    print(" ", n["status"], n["started_at"], n.get("ended_at") or "", n["summary"], "pending:", n["pending_deliveries"])'
