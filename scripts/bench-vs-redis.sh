#!/usr/bin/env bash
# GetPage round trips for cached 8 KiB pages (layergate bench) against
# redis-server GET of 8 KiB values (redis-benchmark), both on Unix sockets, in
# one run, for the same connections (N) and pipelining depth (D).
#   scripts/bench-vs-redis.sh            # uses both cores
#   PIN=1 scripts/bench-vs-redis.sh      # every process on CPU 0 (latency without cross-CPU wake-ups)
# Needs: redis-server and redis-benchmark (apt-get install redis-server), release builds.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
command -v redis-server >/dev/null || { echo "installing redis-server"; apt-get install -y -qq redis-server >/dev/null; }
swift build -c release --product layergated >/dev/null
swift build -c release --product layergate >/dev/null
pin=""
[ "${PIN:-0}" = 1 ] && pin="taskset -c 0"
tmp=$(mktemp -d)
trap 'kill $lg $rd 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
$pin .build/release/layergated --socket "$tmp/lg.sock" --data-dir "$tmp/data" --log-level warning &
lg=$!
$pin redis-server --port 0 --unixsocket "$tmp/redis.sock" --save "" --appendonly no --daemonize no >/dev/null &
rd=$!
for _ in $(seq 100); do [ -S "$tmp/lg.sock" ] && [ -S "$tmp/redis.sock" ] && break; sleep 0.1; done
redis-benchmark -s "$tmp/redis.sock" -t set -d 8192 -r 1000 -n 20000 -q >/dev/null
echo "pinning: ${pin:-none}; ${SECONDS_PER_RUN}s per layergate run"
printf '%-14s %16s %10s %10s %16s %10s %10s %8s\n' "N x D" "layergate ops/s" "p50 ms" "p99 ms" "redis ops/s" "p50 ms" "p99 ms" "ratio"
for cfg in "1 1" "8 1" "8 16"; do
    set -- $cfg
    n=$1 d=$2
    lgout=$($pin .build/release/layergate --socket "$tmp/lg.sock" bench -c "$n" -d "$d" -t "$SECONDS_PER_RUN" --pages 1000)
    lgops=$(echo "$lgout" | sed -E 's/.*GET_PAGE: ([0-9.]+) requests.*/\1/')
    lgp50=$(echo "$lgout" | sed -E 's/.*p50=([0-9.]+) msec.*/\1/')
    lgp99=$(echo "$lgout" | sed -E 's/.*p99=([0-9.]+) msec.*/\1/')
    # About as many requests as layergate did, so both run for a similar time.
    count=$(awk -v o="$lgops" -v s="$SECONDS_PER_RUN" 'BEGIN { c = int(o * s); if (c < 20000) c = 20000; print c }')
    # CSV: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    rdout=$($pin redis-benchmark -s "$tmp/redis.sock" -t get -d 8192 -r 1000 -c "$n" -P "$d" -n "$count" --csv | grep '^"GET"' | tr -d '"')
    rdops=$(echo "$rdout" | cut -d, -f2)
    rdp50=$(echo "$rdout" | cut -d, -f5)
    rdp99=$(echo "$rdout" | cut -d, -f7)
    ratio=$(awk -v a="$lgops" -v b="$rdops" 'BEGIN { printf "%.2f", a / b }')
    printf '%-14s %16s %10s %10s %16s %10s %10s %8s\n' "$n x $d" "$lgops" "$lgp50" "$lgp99" "$rdops" "$rdp50" "$rdp99" "$ratio"
done
