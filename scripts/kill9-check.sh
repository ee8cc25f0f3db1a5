#!/usr/bin/env bash
# Crash check: kill -9 `callpulse serve` while the simulator is sending, restart it, let the
# simulator's retries finish, then prove that every event the server acknowledged (2xx) is in the
# log, and that `callpulse rebuild` reproduces the CDRs the live pipeline wrote.
# usage: scripts/kill9-check.sh [path/to/callpulse]   (default: target/release/callpulse)
set -euo pipefail
bin=${1:-target/release/callpulse}
work=$(mktemp -d)
db="sqlite://$work/callpulse.db"
port=${PORT:-18093}
export CALLPULSE_LIVEKIT_KEYS="crashkey:crash-secret-crash-secret-0001" CALLPULSE_EVENTS_TOKEN="crash-token"

serve() { "$bin" serve --listen "127.0.0.1:$port" --metrics-addr off --database "$db" >>"$work/serve.log" 2>&1 & echo $!; }
wait_up() { for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return 0; sleep 0.1; done; return 1; }

pid=$(serve); wait_up
"$bin" simulate --url "http://127.0.0.1:$port" --rate "${RATE:-40}" --speed 60 --duration "${DURATION:-20}" \
  --seed 42 --ack-log "$work/acks.txt" >"$work/simulate.out" 2>"$work/simulate.log" &
sim=$!
sleep "${KILL_AFTER:-8}"
kill -9 "$pid"; echo "killed serve (pid $pid) with SIGKILL under load"
sleep 2
pid=$(serve); wait_up; echo "restarted serve"
wait "$sim"; cat "$work/simulate.out"
sleep 3
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true

python3 - "$work" <<'PY'
import json, sqlite3, sys
work = sys.argv[1]
con = sqlite3.connect(f"{work}/callpulse.db")
logged = {(s, i) for s, i in con.execute("select source, event_id from event_log")}
acked = {tuple(l.split()) for l in open(f"{work}/acks.txt") if l.strip()}
missing = acked - logged
print(f"acknowledged events: {len(acked)}; in the log: {len(logged)}; acknowledged but missing: {len(missing)}")
live = {c: b for c, b in con.execute("select call_id, body from cdrs")}
json.dump(live, open(f"{work}/live.json", "w"))
sys.exit(1 if missing else 0)
PY
"$bin" rebuild --database "$db"
python3 - "$work" <<'PY'
import json, sqlite3, sys
work = sys.argv[1]
con = sqlite3.connect(f"{work}/callpulse.db")
rebuilt = {c: b for c, b in con.execute("select call_id, body from cdrs")}
live = json.load(open(f"{work}/live.json"))
diff = [c for c in set(live) | set(rebuilt) if live.get(c) != rebuilt.get(c)]
print(f"CDRs live: {len(live)}; after rebuild: {len(rebuilt)}; different: {len(diff)}")
sys.exit(1 if diff else 0)
PY
echo "kill -9 check passed ($work)"
