#!/usr/bin/env bash
# Heap allocations per cached GetPage in layergated: uprobes on libc's malloc
# and free (perf probe; needs root and Debian's linux-perf), counted in the
# server process only while layergate-cbench --epoll reads 1,000 cached pages.
# Prints mallocs and frees per request for 8 x 1 and 8 x 16 (RESULTS=FILE: also "name value" lines there).
#   scripts/count-mallocs.sh [path/to/layergated]   # default .build/release/layergated
# Today, on the epoll loop: none per request at 8 x 1 and at 8 x 16 (the answer
# is built in a spare buffer of the loop, the request read where it lies in the
# loop's read buffer, the start of a frame a read leaves kept in a spare read
# buffer; until those spares, 0.25 at 8 x 16). With SERVER_ARGS="--event-loop
# nio": about 2.1 (the answer's ByteBuffer, its storage object and its bytes).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-.build/release/layergated}
if [ "$(id -u)" != 0 ]; then echo "count-mallocs: skipped, perf uprobes need root"; exit 0; fi
command -v perf >/dev/null || { echo "count-mallocs: install Debian's linux-perf first"; exit 1; }
libc=$(ldd "$bin" | awk '$1 ~ /^libc\.so/ { print $3 }')
perf probe -q -x "$libc" malloc 2>/dev/null || true
perf probe -q -x "$libc" free 2>/dev/null || true
make -s -C clients/c build/layergate-cbench >/dev/null
tmp=$(mktemp -d)
# SERVER_ARGS: more flags, e.g. SERVER_ARGS="--metrics-listen 127.0.0.1:0" to count with metrics exported.
"$bin" --socket "$tmp/s.sock" --data-dir "$tmp/d" --log-level warning ${SERVER_ARGS:-} & srv=$!
# The uprobes go when the script does: left in place they tax every malloc on the machine.
trap 'kill $srv 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; perf probe -q -d "probe_libc:*" 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -S "$tmp/s.sock" ] && break; sleep 0.1; done
cb=clients/c/build/layergate-cbench
$cb -s "$tmp/s.sock" -t 0.3 -q >/dev/null  # create the tenant, write and cache the pages
for depth in 1 16; do
    perf stat -x, -e probe_libc:malloc,probe_libc:free -p $srv -- sleep 2.3 2>"$tmp/stat" & p=$!
    sleep 0.1
    n=$($cb -s "$tmp/s.sock" -c 8 -P $depth -t 2 -q --epoll | sed -E 's/.* ([0-9]+) requests, .*/\1/')
    wait $p
    awk -F, -v n="$n" -v d=$depth '/probe_libc:malloc/ { m = $1 } /probe_libc:free/ { f = $1 }
        END { printf "8 x %-2d %8d requests: %.2f mallocs and %.2f frees per cached GetPage\n", d, n, m / n, f / n }' "$tmp/stat"
    if [ -n "${RESULTS:-}" ]; then
        awk -F, -v n="$n" -v d=$depth '/probe_libc:malloc/ { printf "mallocs.8x%d %.2f\n", d, $1 / n }' "$tmp/stat" >>"$RESULTS"
    fi
done
