#!/bin/sh
# layergate-cbench --epoll opens its connections all at once, far more than
# layergated's accept backlog (256): each connect must wait for room, not fail.
# usage: cbench_backlog.sh LAYERGATED CBENCH
set -eu
layergated=$1 cbench=$2 clients=1000
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((2 * clients + 100)) ]; then
    ulimit -n $((2 * clients + 100)) 2>/dev/null || {
        echo "cbench_backlog: skipped: $((2 * clients + 100)) descriptors needed, the limit is $(ulimit -n) and cannot be raised"
        exit 0
    }
fi
dir=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
"$layergated" --socket "$dir/s" --data-dir "$dir/data" --log-level warning &
pid=$!
for _ in $(seq 100); do [ -S "$dir/s" ] && break; sleep 0.1; done
[ -S "$dir/s" ] || { echo "cbench_backlog: layergated did not start"; exit 1; }
"$cbench" -s "$dir/s" -c $clients -P 1 -t 1 --epoll -q
