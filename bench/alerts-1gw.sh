#!/usr/bin/env bash
# 1 GW at its real rate: `megawatch loadgen` publishes 69,120 simulated
# 8-GPU nodes (4 halls × 20 rows × 48 racks × 18 nodes, the 1 GW campus of
# BenchmarkEngineTick), one report per node per second, through a real
# nats-server into `megawatch alerts`. After a warm-up, for DURATION seconds
# it measures the aggregator process only:
#   CPU seconds per second   (utime+stime from /proc/<pid>/stat)
#   max RSS                  (VmHWM from /proc/<pid>/status)
#   coverage                 (the site's, from /api/snapshot, sampled every 5 s: min and last)
#   lag                      (megawatch_alerts_lag_seconds, sampled: max and last; lag_max since start)
#   lost reports             (megawatch_alerts_inputs_total{result=late|future|...}; accepted vs published)
#
#   bench/alerts-1gw.sh [DURATION_S]        # default 300 (5 minutes)
#   NODES=69120 WARMUP=30 bench/alerts-1gw.sh 60
#
# Needs nats-server (scripts/install-test-servers.sh). Not part of CI. The
# loadgen runs on the same machine and takes CPU of its own (≈ 9 µs per
# report to simulate and encode): on a small box the figures are pessimistic.
set -euo pipefail
cd "$(dirname "$0")/.."
export CGO_ENABLED=1 CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations"
DURATION=${1:-${DURATION:-300}}
NODES=${NODES:-69120}
WARMUP=${WARMUP:-30}
GRACE=${GRACE:-1s}   # how long after a window's end its reports may reach the stream
LOADGENS=${LOADGENS:-2}  # parallel loadgen processes (--shard i/N); one core simulates ≈ 80k reports/s at best
TOOLS=${MEGAWATCH_TOOLS:-$HOME/.cache/megawatch/tools}/bin
NATS_SERVER=${NATS_SERVER:-$( [ -x "$TOOLS/nats-server" ] && echo "$TOOLS/nats-server" || command -v nats-server || true)}
[ -n "$NATS_SERVER" ] || { echo "nats-server not found: run scripts/install-test-servers.sh" >&2; exit 1; }

work=$(mktemp -d -t megawatch-1gw-XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
echo "building megawatch…"
go build -o "$work/megawatch" ./cmd/megawatch
MW="$work/megawatch"

cat > "$work/topology.yaml" <<'EOF'
levels: [site, hall, row, rack]
domains:
  - name: dc1
    capacity_kw: 960000
    children:
      - name: h[01-04]
        capacity_kw: 240000
        children:
          - name: r[01-20]
            capacity_kw: 12000
            children:
              - name: k[01-48]
                capacity_kw: 250
                nodes: ["g-{hall}-{row}-{rack}-n[01-18]"]
EOF

nport=$(freeport); hport=$(freeport)
"$NATS_SERVER" -a 127.0.0.1 -p "$nport" -js -sd "$work/js" > "$work/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/"$nport") 2>/dev/null && break; sleep 0.1; done
NATS="nats://127.0.0.1:$nport"

cat > "$work/alerts.yaml" <<EOF
nats: {servers: ["$NATS"]}
topology: $work/topology.yaml
http_addr: 127.0.0.1:$hport
grace: $GRACE
notifiers: {log: {enabled: false}, log_only: true}   # a benchmark: nothing pages
EOF
"$MW" alerts --config "$work/alerts.yaml" --log-level warn > "$work/alerts.log" 2>&1 &
apid=$!; pids+=($apid)
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$hport/readyz" > /dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$hport/readyz" > /dev/null || { echo "alerts not ready:"; cat "$work/alerts.log"; exit 1; }

lpids=()
for i in $(seq 0 $((LOADGENS - 1))); do
  "$MW" loadgen --nats "$NATS" --nodes "$NODES" --topology "$work/topology.yaml" --rate real --shard "$i/$LOADGENS" > "$work/loadgen-$i.log" 2>&1 &
  lpids+=($!); pids+=($!)
done

metric() { curl -sf "http://127.0.0.1:$hport/metrics" | awk -v m="$1" '$1 == m { print $2; found=1 } END { if (!found) print "NaN" }'; }
coverage() { curl -sf "http://127.0.0.1:$hport/api/snapshot" | python3 -c 'import json,sys; s=json.load(sys.stdin)["sites"]; print(min(x["coverage"] for x in s) if s else "NaN")'; }
cpu() { awk '{ print $14 + $15 }' "/proc/$apid/stat"; }
hz=$(getconf CLK_TCK)

echo "warming up ${WARMUP}s (${NODES} nodes at 1 report/s from ${LOADGENS} loadgen processes)…"
sleep "$WARMUP"
acc0=$(metric 'megawatch_alerts_inputs_total{result="accepted"}')
c0=$(cpu); t0=$(date +%s.%N)
mincov=1; maxlag=0; end=$(( $(date +%s) + DURATION ))
while [ "$(date +%s)" -lt "$end" ]; do
  sleep 5
  cv=$(coverage || echo NaN); lg=$(metric megawatch_alerts_lag_seconds)
  mincov=$(python3 -c "print(min($mincov, $cv))" 2>/dev/null || echo "$mincov")
  maxlag=$(python3 -c "print(max($maxlag, $lg))" 2>/dev/null || echo "$maxlag")
done
c1=$(cpu); t1=$(date +%s.%N)
acc1=$(metric 'megawatch_alerts_inputs_total{result="accepted"}')
rss=$(awk '/VmHWM/ { print $2 }' "/proc/$apid/status")
for p in "${lpids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
for p in "${lpids[@]}"; do wait "$p" 2>/dev/null || true; done

python3 - "$c0" "$c1" "$t0" "$t1" "$hz" "$acc0" "$acc1" "$rss" "$mincov" "$maxlag" "$NODES" <<'EOF'
import sys
c0, c1, t0, t1, hz, a0, a1, rss, mincov, maxlag, nodes = map(float, sys.argv[1:])
el = t1 - t0
print(f"aggregator CPU: {(c1 - c0) / hz / el:.3f} s per second ({(c1 - c0) / hz * 1e6 / max(1, a1 - a0):.2f} µs per report)")
print(f"aggregator max RSS: {rss / 1024:.0f} MiB")
print(f"reports accepted: {(a1 - a0) / el:.0f}/s over {el:.0f} s (published: {nodes:.0f}/s)")
print(f"site coverage: min {mincov:.4f} (sampled every 5 s)")
print(f"lag: max {maxlag:.2f} s sampled")
EOF
for r in accepted late future decode_error unknown mismatch shape; do
  printf 'inputs %-12s %s\n' "$r" "$(metric "megawatch_alerts_inputs_total{result=\"$r\"}")"
done
echo "lag now $(metric megawatch_alerts_lag_seconds) s, lag max since start $(metric megawatch_alerts_lag_max_seconds) s, backlog $(metric megawatch_alerts_input_backlog)"
echo "tick seconds: sum $(metric megawatch_alerts_tick_seconds_sum) over $(metric megawatch_alerts_tick_seconds_count) ticks"
for f in "$work"/loadgen-*.log; do tail -1 "$f"; done
if grep -q "publisher behind" "$work"/loadgen-*.log; then
  echo "NOTE: loadgen could not publish ${NODES} reports/s on this machine (it thinned or skipped windows, see above):"
  echo "      reports that reach the stream after window end + grace are rightly counted late, and coverage falls."
  echo "      Run on a quieter machine, or give loadgen its own cores, for the aggregator's own figures."
fi
grep -i "warn\|error" "$work/alerts.log" | tail -5 || true
