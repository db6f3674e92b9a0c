#!/bin/sh
# layergate-cbench --epoll --rate: an open loop. At a rate the server keeps up
# with, the requests made are the rate's (within 15 %); at a rate far past what
# it can answer, the latency counts from each request's due time, so it grows
# with the backlog (a closed loop's clock, from the send, would stay at µs);
# a server stopped over the run's end and the second of grace after it leaves
# requests due and never sent, which are counted as waiting until the end, not
# left out; a rate under one request
# per connection in the run is refused.
# usage: cbench_rate.sh LAYERGATED CBENCH
set -eu
layergated=$1 cbench=$2
. "$(dirname "$0")/layergated.sh"
start_layergated cbench_rate "$layergated"
# -q: "GET_PAGE: R requests per second, p50=A msec, ... (C connections, depth D, N requests, 8 KiB pages)"
requests() { echo "$1" | sed -E 's/.*, ([0-9]+) requests, .*/\1/'; }
p50() { echo "$1" | sed -E 's/.*p50=([0-9.]+) msec.*/\1/'; }
paced=$("$cbench" -s "$dir/s" -c 4 -t 2 --epoll --rate 500 -q)
echo "cbench_rate: 4 x 500 a second for 2 s: $paced"
n=$(requests "$paced")
[ "$n" -ge 3400 ] && [ "$n" -le 4600 ] || { echo "cbench_rate: $n requests, not about 4000"; exit 1; }
flood=$("$cbench" -s "$dir/s" -c 4 -t 1 --epoll --rate 1000000 -q)
echo "cbench_rate: 4 x 1,000,000 a second for 1 s: $flood"
awk -v p="$(p50 "$flood")" 'BEGIN { exit !(p >= 100) }' || { echo "cbench_rate: p50 $(p50 "$flood") ms past the server's pace: not counted from the due time"; exit 1; }
"$cbench" -s "$dir/s" -c 4 -t 1 --epoll --rate 500 -q >"$dir/stalled" &
run=$!
sleep 0.3
kill -STOP "$pid"
sleep 2.5
kill -CONT "$pid"
wait "$run"
stalled=$(cat "$dir/stalled")
echo "cbench_rate: 4 x 500 a second for 1 s, the server stopped from 0.3 s to 2.8 s (past the 1 s of grace): $stalled"
echo "$stalled" | grep -q "fell due before the end and were never sent" || { echo "cbench_rate: the unsent requests were not reported"; exit 1; }
p99() { echo "$1" | sed -E 's/.*p99=([0-9.]+) msec.*/\1/'; }
awk -v p="$(p99 "$stalled" | head -1)" 'BEGIN { exit !(p >= 300) }' || { echo "cbench_rate: p99 $(p99 "$stalled") ms with the server stopped for most of the run: the unsent requests were left out"; exit 1; }
for bad in 0.5 abc 1e8; do
    if "$cbench" -s "$dir/s" -c 1 -t 1 --epoll --rate $bad -q 2>/dev/null; then echo "cbench_rate: --rate $bad was taken"; exit 1; fi
done
