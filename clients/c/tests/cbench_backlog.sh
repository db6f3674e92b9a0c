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
. "$(dirname "$0")/layergated.sh"
start_layergated cbench_backlog "$layergated"
"$cbench" -s "$dir/s" -c $clients -P 1 -t 1 --epoll -q
