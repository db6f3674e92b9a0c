#!/usr/bin/env bash
# Ordered, pipelined ingest over the socket next to the engine's own figure,
# in one run: 8 KiB images from ONE connection, PIPELINE PutRecords in flight,
# applied in the order sent: with the C client (`layergate-pagebench load`,
# lg_put_many, 64 images a put: the figure) and the Swift CLI (`layergate put
# --generate`, BATCH records a put),
# against `layergate-storage-bench --only ingest` (the storage engine called
# in-process by WRITERS tasks, no socket). Both figures are MiB/s acknowledged
# as durable (WAL fsynced), before the final flush to layer files. Prints the
# ratio socket / engine (goal: >= 0.9, and >= 400 MiB/s). ROUNDS rounds, each
# runs both; the median ratio is the figure. Data in a temp dir under /tmp.
#   scripts/bench-ingest.sh
#   MIB=2048 PIPELINE=32 ROUNDS=5 BUILD=0 scripts/bench-ingest.sh
# RESULTS=FILE also appends the medians to FILE as "name value" lines (make bench reads them).
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${MIB:-1024}
BATCH=${BATCH:-64}
PIPELINE=${PIPELINE:-16}
WRITERS=${WRITERS:-4}
ROUNDS=${ROUNDS:-3}
if [ "${BUILD:-1}" != 0 ]; then
    echo "bench-ingest: building layergated, layergate and layergate-storage-bench (release)"
    for p in layergated layergate layergate-storage-bench; do scripts/swift.sh build -c release --product $p >/dev/null; done
fi
make -s -C clients/c build/layergate-pagebench >/dev/null
tmp=$(mktemp -d /tmp/layergate-ingest-XXXXXX)
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
tenant=be0c0000000000000000000000000004
pages=$((MIB * 128))
ratios="" cs="" ss="" es=""
printf '%-6s %16s %16s %14s %7s\n' round "C client MiB/s" "Swift CLI MiB/s" "engine MiB/s" ratio
for r in $(seq "$ROUNDS"); do
    rm -rf "$tmp/data"
    .build/release/layergated --socket "$tmp/s.sock" --data-dir "$tmp/data" --log-level warning &
    server=$!
    for _ in $(seq 100); do [ -S "$tmp/s.sock" ] && break; sleep 0.1; done
    .build/release/layergate create-tenant --socket "$tmp/s.sock" $tenant >/dev/null
    t0=$(date +%s.%N)
    .build/release/layergate put --socket "$tmp/s.sock" $tenant --generate $pages --keys 100000 \
        --batch "$BATCH" --pipeline "$PIPELINE" >/dev/null 2>&1
    t1=$(date +%s.%N)
    swift_socket=$(awk -v m="$MIB" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", m / (b - a) }')
    # The same over the C client (lg_put_many), into another tenant of the same server.
    socket=$(clients/c/build/layergate-pagebench load -s "$tmp/s.sock" --tenant be0c0000000000000000000000000005 \
        --pages $pages --versions 1 --pipeline "$PIPELINE" --no-compact | sed -nE 's/.*: ([0-9.]+) MiB\/s.*/\1/p')
    kill -TERM "$server"; wait "$server" || true; server=""
    engine=$(.build/release/layergate-storage-bench --only ingest --ingest-mib "$MIB" --writers "$WRITERS" |
        sed -nE 's/.*\(([0-9.]+) MiB\/s before the final flush\).*/\1/p')
    ratio=$(awk -v s="$socket" -v e="$engine" 'BEGIN { printf "%.2f", s / e }')
    ratios="$ratios $ratio" cs="$cs $socket" ss="$ss $swift_socket" es="$es $engine"
    printf '%-6s %16s %16s %14s %7s\n' "$r" "$socket" "$swift_socket" "$engine" "$ratio"
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
median=$(echo $ratios | median)
if [ -n "${RESULTS:-}" ]; then
    { echo "ingest.c $(echo $cs | median)"; echo "ingest.swift $(echo $ss | median)"; echo "ingest.engine $(echo $es | median)"
      echo "ingest.ratio $median"; } >>"$RESULTS"
fi
echo "median ratio C client over the socket / engine: $median ($MIB MiB of 8 KiB images; one connection, $PIPELINE puts in flight, $BATCH records a put (the C client: 64); engine: $WRITERS writers in-process)"
