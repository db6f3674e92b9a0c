#!/usr/bin/env bash
# What checking tokens costs cached GetPage: the same C client (layergate-cbench)
# against two release servers in one run, one without --auth-public-key and one
# with it (a tenant-scope token on every request), alternating rounds; prints
# ops/s of each and the ratio (goal: within 5%). Release builds.
#   scripts/bench-auth.sh                 # 8 x 1 and 8 x 16, 3 rounds of 4 s
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${SECONDS_PER_RUN:-4}
ROUNDS=${ROUNDS:-3}
swift build -c release --product layergated >/dev/null
swift build -c release --product layergate >/dev/null
make -s -C clients/c build/layergate-cbench >/dev/null
tmp=$(mktemp -d)
trap 'kill $plain $auth 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
lg=.build/release/layergate
$lg keygen --out "$tmp/keys" >/dev/null
tenant=be0c0000000000000000000000000002
admin=$($lg token --scope admin --ttl 1h --private-key "$tmp/keys/token-key.pem")
reader=$($lg token --scope tenant --tenant $tenant --ttl 1h --private-key "$tmp/keys/token-key.pem")
.build/release/layergated --socket "$tmp/plain.sock" --data-dir "$tmp/plain" --log-level warning &
plain=$!
.build/release/layergated --socket "$tmp/auth.sock" --data-dir "$tmp/auth" --log-level warning \
    --auth-public-key "$tmp/keys/token-key.pub.pem" &
auth=$!
for _ in $(seq 100); do [ -S "$tmp/plain.sock" ] && [ -S "$tmp/auth.sock" ] && break; sleep 0.1; done
cbench=clients/c/build/layergate-cbench
# Create and cache the pages on both (admin on the one that checks tokens).
$cbench -s "$tmp/plain.sock" -t 0.2 -q >/dev/null
$cbench -s "$tmp/auth.sock" --token "$admin" -t 0.2 -q >/dev/null
ops() { echo "$1" | sed -E 's/.*GET_PAGE: ([0-9.]+) requests.*/\1/'; }
median() { tr ' ' '\n' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
printf '%-7s %14s %14s %8s\n' "N x D" "no auth ops/s" "tokens ops/s" "ratio"
for cfg in "8 1" "8 16"; do
    set -- $cfg
    p="" a=""
    for _ in $(seq "$ROUNDS"); do
        p="$p $(ops "$($cbench -s "$tmp/plain.sock" -c "$1" -P "$2" -t "$SECONDS_PER_RUN" -q)")"
        a="$a $(ops "$($cbench -s "$tmp/auth.sock" --token "$reader" -c "$1" -P "$2" -t "$SECONDS_PER_RUN" -q)")"
    done
    pm=$(echo $p | median) am=$(echo $a | median)
    printf '%-7s %14.0f %14.0f %8.3f\n' "$1 x $2" "$pm" "$am" "$(awk -v a="$am" -v p="$pm" 'BEGIN { print a / p }')"
done
echo "(medians of $ROUNDS alternating rounds of ${SECONDS_PER_RUN} s; both servers on both cores)"
