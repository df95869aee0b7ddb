#!/usr/bin/env bash
# NATS → InfluxDB throughput, all measured in one run on one machine:
#   ceiling   — the same points pre-encoded, 4 concurrent HTTP writers,
#               5,000-line batches, gzip level 1, straight to influxd
#   megawatch — `ingest` consuming the reports from a nats-server process
#   telegraf  — Telegraf 1.37.2 (nats_consumer → influxdb_v2) fed the same
#               line protocol on a JetStream subject, best settings
# Each is timed to the last accepted write (influxd's /debug/vars
# pointsWrittenOK), then the count is verified once. CPU µs/point is the
# writer's own process (the ingest, the direct writer, telegraf) from /proc.
#
# Needs the test servers (scripts/install-test-servers.sh) and Telegraf:
#   GOBIN=$HOME/.cache/megawatch/tools/bin go install \
#     -tags "custom,inputs.nats_consumer,outputs.influxdb_v2,parsers.influx" \
#     github.com/influxdata/telegraf/cmd/telegraf@v1.37.2     # ~40 s
# Size: BENCH_NODES (1000) × BENCH_WINDOWS (125) × 8 GPUs = 1M gpu points
# (+125k node points). Not part of CI. Also runs the encode benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
export CGO_ENABLED=1 CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations"
if [ -z "${TELEGRAF:-}" ]; then
  for c in "${MEGAWATCH_TOOLS:-$HOME/.cache/megawatch/tools}/bin/telegraf" /root/tools/bin/telegraf "$(command -v telegraf || true)"; do
    if [ -n "$c" ] && [ -x "$c" ]; then export TELEGRAF="$c"; break; fi
  done
fi
echo "telegraf: ${TELEGRAF:-not found, skipped}"
# Encode and decode against their libraries' own paths, same run.
go test -run '^$' -bench 'BenchmarkEncode$|BenchmarkDecodeReport$' -benchtime 200000x -count 3 ./ingest
# BENCH_ROUNDS (default 3) rounds alternate the writers, so a busy neighbour
# slows them alike; each round starts with a different writer, and every
# phase waits until influxd and nats-server are idle.
out=$(mktemp)
go test -run '^$' -bench 'BenchmarkThroughput$' -benchtime 1x -count 1 -timeout 30m ./ingest | tee "$out"
# Per round: each writer's points/s as a fraction of that round's ceiling.
awk '/^BenchmarkThroughput\/round=/ {
  split($1, a, "/"); r = a[2]; w = a[3]; sub(/-[0-9]+$/, "", w); sub(/writer=/, "", w)
  for (i = 1; i < NF; i++) if ($(i+1) == "points/s") v[r, w] = $i
  rounds[r] = 1
} END {
  for (r in rounds) {
    c = v[r, "ceiling"]; if (c == 0) continue
    line = r ": ceiling " c " points/s"
    if (v[r, "megawatch"]) line = line sprintf(", megawatch %.3fx", v[r, "megawatch"] / c)
    if (v[r, "telegraf"]) line = line sprintf(", telegraf %.3fx", v[r, "telegraf"] / c)
    if (v[r, "megawatch"] && v[r, "telegraf"]) line = line sprintf(", megawatch/telegraf %.2f", v[r, "megawatch"] / v[r, "telegraf"])
    print line
  }
}' "$out" | sort
for c in benchstat "$HOME/go/bin/benchstat" /root/tools/bin/benchstat; do
  if command -v "$c" >/dev/null 2>&1; then "$c" -ignore /round "$out"; break; fi
done
