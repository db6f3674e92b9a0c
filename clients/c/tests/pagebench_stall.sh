#!/bin/sh
# layergate-pagebench get, a thread per client, against a server stopped
# mid-run (SIGSTOP): each client gives up 10 s past the run's end with an
# error, as the epoll clients do, instead of waiting out the 10 minutes its
# connection allows the load.
# usage: pagebench_stall.sh LAYERGATED PAGEBENCH
set -eu
layergated=$1 pagebench=$2
. "$(dirname "$0")/layergated.sh"
start_layergated pagebench_stall "$layergated"
"$pagebench" load -s "$dir/s" --pages 64 --versions 1 --no-compact >/dev/null
start=$(date +%s)
"$pagebench" get -s "$dir/s" --pages 64 --versions 1 -c 2 -t 1 >"$dir/out" 2>&1 &
run=$!
sleep 0.3
kill -STOP "$pid"
# Past 20 s it hangs: end it, and fail.
( sleep 20; kill "$run" 2>/dev/null ) &
guard=$!
rc=0
wait "$run" || rc=$?
kill "$guard" 2>/dev/null || true
kill -CONT "$pid"
took=$(( $(date +%s) - start ))
echo "pagebench_stall: the server stopped 0.3 s into a 1 s run: exit $rc after $took s: $(head -c 300 "$dir/out")"
[ "$rc" -ne 0 ] || { echo "pagebench_stall: the run succeeded with the server stopped"; exit 1; }
[ "$took" -ge 9 ] && [ "$took" -le 15 ] || { echo "pagebench_stall: gave up after $took s, not about 11"; exit 1; }
grep -q "no answer within" "$dir/out" || { echo "pagebench_stall: the error does not say the server did not answer"; exit 1; }
