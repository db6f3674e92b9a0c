#!/usr/bin/env bash
# Two layergated binaries taking turns on cold GetPages: the way to tell a
# change of the cold path from the disk's mood, which on these VMs moves by
# the minute. Each pair: the disk alone (8 threads of O_DIRECT pread, 3 s),
# then OLD and NEW, each a fresh server over the bench-cold data set with its
# OS page cache dropped, 8 clients for RUN_SECONDS.
#
#   scripts/bench-cold-ab.sh OLD NEW [PAIRS]
#   LSN=past for past LSNs; RATE=1250 for an open loop at 8 x RATE a second.
# The data set is scripts/bench-cold.sh's (run it once first).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 OLD-BINARY NEW-BINARY [PAIRS]" >&2; exit 2; }
old=$1 new=$2 pairs=${3:-3}
DATA=${DATA:-.layergate/bench-cold}
RUN_SECONDS=${RUN_SECONDS:-6}
tenant=be0c0000000000000000000000000003
dir=$DATA/data/tenants/$tenant sock=$DATA/layergate.sock
[ -d "$dir" ] || { echo "bench-cold-ab: no data set in $DATA: run scripts/bench-cold.sh first" >&2; exit 1; }
make -s -C clients/c build/layergate-pagebench >/dev/null
bench=clients/c/build/layergate-pagebench
flag=() rate=()
[ "${LSN:-latest}" = past ] && flag=(--past)
[ -n "${RATE:-}" ] && rate=(--rate "$RATE")
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null || true' EXIT
# figures OUTPUT: ops/s and percentiles of get's or raw's first line.
figures() { sed -nE '1s/.*: ([0-9]+ ops\/s), (p50 [0-9]+ us, p99 [0-9]+ us, p99.9 [0-9]+ us).*/\1, \2/p' <<<"$1"; }
for pair in $(seq "$pairs"); do
    $bench evict --dir "$dir" >/dev/null
    echo "pair $pair: disk $(figures "$($bench raw --dir "$dir" -c 8 -t 3 "${rate[@]}")")"
    for which in old new; do
        binary=$old
        [ $which = new ] && binary=$new
        $bench evict --dir "$dir" >/dev/null
        "$binary" --socket "$sock" --data-dir "$DATA/data" --page-cache-mib 128 --log-level warning &
        server=$!
        for _ in $(seq 300); do [ -S "$sock" ] && break; sleep 0.05; done
        if [ ${#rate[@]} -gt 0 ]; then
            # An open loop does not wait: the files' first opening would queue its first reads (bench-cold.sh).
            $bench get -s "$sock" --tenant $tenant --pages 131072 --versions 2 -c 8 -t 1 --epoll --seed 1 "${flag[@]}" >/dev/null
            $bench evict --dir "$dir" >/dev/null
        fi
        out=$($bench get -s "$sock" --tenant $tenant --pages 131072 --versions 2 -c 8 -t "$RUN_SECONDS" --epoll "${flag[@]}" "${rate[@]}")
        echo "        $which $(figures "$out")"
        kill -TERM "$server"
        wait "$server" || true
        server=""
    done
done
