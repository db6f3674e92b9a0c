#!/usr/bin/env bash
# What checking tokens costs cached GetPage: the same C client (layergate-cbench)
# against two release servers in one run, one without --auth-public-key and one
# with it (a tenant-scope token on every request), alternating rounds; prints
# ops/s of each, the median of the rounds' ratios (goal: within 5%), and each
# server's CPU time per request (from /proc), which machine noise moves less
# than throughput. The C bench runs in redis-benchmark's shape (--epoll: one
# thread for every connection; MODE=threads: a thread per connection).
# Release builds (BUILD=0 uses the binaries already built).
#   scripts/bench-auth.sh                 # 8 x 1 and 8 x 16, 21 rounds of 1 s
#   PIN=1 scripts/bench-auth.sh           # servers on CPU 1, the client on CPU 0 (taskset):
#                                         # less noise from where the scheduler puts threads
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${SECONDS_PER_RUN:-1}
ROUNDS=${ROUNDS:-21}
if [ "${BUILD:-1}" != 0 ]; then
    scripts/swift.sh build -c release --product layergated >/dev/null
    scripts/swift.sh build -c release --product layergate >/dev/null
fi
make -s -C clients/c build/layergate-cbench >/dev/null
tmp=$(mktemp -d)
trap 'kill $plain $auth 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
lg=.build/release/layergate
$lg keygen --out "$tmp/keys" >/dev/null
tenant=be0c0000000000000000000000000002
admin=$($lg token --scope admin --ttl 1h --private-key "$tmp/keys/token-key.pem")
reader=$($lg token --scope tenant --tenant $tenant --ttl 1h --private-key "$tmp/keys/token-key.pem")
server_cpu="" client_cpu=""
if [ "${PIN:-0}" = 1 ]; then server_cpu="taskset -c 1" client_cpu="taskset -c 0"; fi
$server_cpu .build/release/layergated --socket "$tmp/plain.sock" --data-dir "$tmp/plain" --log-level warning &
plain=$!
$server_cpu .build/release/layergated --socket "$tmp/auth.sock" --data-dir "$tmp/auth" --log-level warning \
    --auth-public-key "$tmp/keys/token-key.pub.pem" &
auth=$!
for _ in $(seq 100); do [ -S "$tmp/plain.sock" ] && [ -S "$tmp/auth.sock" ] && break; sleep 0.1; done
cbench=clients/c/build/layergate-cbench
mode=--epoll
[ "${MODE:-epoll}" = threads ] && mode=""
# Create and cache the pages on both (admin on the one that checks tokens).
$cbench -s "$tmp/plain.sock" -t 0.2 -q >/dev/null
$cbench -s "$tmp/auth.sock" --token "$admin" -t 0.2 -q >/dev/null
ops() { echo "$1" | sed -E 's/.*GET_PAGE: ([0-9.]+) requests.*/\1/'; }
requests() { echo "$1" | sed -E 's/.* ([0-9]+) requests, .*/\1/'; }
# The server's user + system CPU time, in clock ticks.
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
# The middle half of the rounds' ratios: how much the machine moved them.
quartiles() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { printf "%.2f–%.2f", a[int(NR / 4) + 1], a[int(3 * NR / 4) + 1] }'; }
# One round against one server: "ops/s µs-of-server-CPU-per-request".
round() {
    local pid=$1; shift
    local t0 out t1
    t0=$(ticks "$pid")
    out=$($client_cpu $cbench "$@" -t "$SECONDS_PER_RUN" -q $mode)
    t1=$(ticks "$pid")
    awk -v o="$(ops "$out")" -v n="$(requests "$out")" -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" \
        'BEGIN { printf "%s %.2f\n", o, d / hz * 1e6 / n }'
}
printf '%-7s %14s %14s %8s %12s %16s %16s\n' "N x D" "no auth ops/s" "tokens ops/s" "ratio" "(middle 50%)" "µs CPU/req none" "µs CPU/req auth"
for cfg in ${CONFIGS:-8x1 8x16}; do
    set -- ${cfg/x/ }
    p="" a="" r="" pc="" ac=""
    for i in $(seq "$ROUNDS"); do
        # Which server goes first alternates, so that neither gains from its place in a round.
        if [ $((i % 2)) = 1 ]; then
            read -r po pu < <(round "$plain" -s "$tmp/plain.sock" -c "$1" -P "$2")
            read -r ao au < <(round "$auth" -s "$tmp/auth.sock" --token "$reader" -c "$1" -P "$2")
        else
            read -r ao au < <(round "$auth" -s "$tmp/auth.sock" --token "$reader" -c "$1" -P "$2")
            read -r po pu < <(round "$plain" -s "$tmp/plain.sock" -c "$1" -P "$2")
        fi
        p="$p $po" a="$a $ao" pc="$pc $pu" ac="$ac $au"
        r="$r $(awk -v a="$ao" -v p="$po" 'BEGIN { print a / p }')"
    done
    printf '%-7s %14.0f %14.0f %8.3f %12s %16.2f %16.2f\n' "$1 x $2" "$(echo $p | median)" "$(echo $a | median)" \
        "$(echo $r | median)" "$(echo $r | quartiles)" "$(echo $pc | median)" "$(echo $ac | median)"
done
echo "(cbench ${mode:-with a thread per connection}; medians of $ROUNDS rounds of ${SECONDS_PER_RUN} s, each server first in every other round; the ratio is the median of each round's ratio; $([ "${PIN:-0}" = 1 ] && echo "servers pinned to CPU 1, client to CPU 0" || echo "both servers on both cores"))"
