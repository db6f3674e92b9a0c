#!/usr/bin/env bash
# GetPage round trips for cached 8 KiB pages against redis GET of 8 KiB values,
# all on Unix sockets, in one run, for the same connections (N) and pipelining
# depth (D), with these clients:
#   cbench --epoll    the C bench in redis-benchmark's shape: one thread, one epoll set,
#                     N connections each sending batches of D (the ratio that counts); its
#                     latency is redis-benchmark's too: from just before a batch's send to
#                     the first event of its answers (reading and parsing them excluded)
#   cbench threads    the C client library (clients/c): a thread per connection, batches of D
#   layergate bench   the Swift client, in the same shape: a thread per connection with
#                     LayerGateConnection (blocking calls), and with --client async a task
#                     per connection with LayerGateClient (async/await on its own epoll loop,
#                     ClientLoop); both read each batch's pages into one buffer the connection
#                     keeps (getPages(..., into:)), as cbench reads into its caller's buffers,
#                     and the async client runs again with an array per page (--page-memory per-page)
#   redis-benchmark   GET against redis-server (the baseline: ratio 1.00)
#   cbench --redis    the cbench --epoll client itself against redis-server (GET of the same
#                     8 KiB values): the same baseline with the client held equal
# layergated serves its connections on its own epoll loop (the default); a second
# layergated with --event-loop nio (SwiftNIO) is measured by cbench --epoll in the
# same run, to show what the loop itself is worth; and at 1 x 1, a third with
# --busy-poll-us $BUSY_POLL_US (default 50: the loop polls that long after each
# event before it sleeps, so a lone client's next request finds it awake).
#   scripts/bench-vs-redis.sh            # uses both cores
#   PIN=1 scripts/bench-vs-redis.sh      # every process on CPU 0 (latency without cross-CPU wake-ups)
#   PIN=split scripts/bench-vs-redis.sh  # both servers on CPU 1, every client on CPU 0
# Then, because one run of each on these VMs can be 2x off, the ratio that
# counts again: ROUNDS (default 15) rounds of 1 s of cbench --epoll and of
# redis-benchmark, taking turns (each first in every other round), with the
# median of the rounds' ratios and the middle half of them; and in the same
# rounds cbench --epoll over cbench --redis (the "same client" ratio), and each
# side's p50 and p99 as the median over the rounds (make bench's goal 2 reads the 1 x 1 ones).
# Needs: redis-server and redis-benchmark (installed with apt-get if missing), release builds.
# RESULTS=FILE also appends every figure to FILE as "name value" lines (make bench reads them).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
command -v redis-server >/dev/null || { echo "installing redis-server"; apt-get install -y -qq redis-server >/dev/null; }
if [ "${BUILD:-1}" != 0 ]; then  # BUILD=0: the release binaries already built
    scripts/swift.sh build -c release --product layergated >/dev/null
    scripts/swift.sh build -c release --product layergate >/dev/null
fi
make -s -C clients/c build/layergate-cbench >/dev/null
pin="" serverpin=""
[ "${PIN:-0}" = 1 ] && pin="taskset -c 0" serverpin="taskset -c 0"
[ "${PIN:-0}" = split ] && pin="taskset -c 0" serverpin="taskset -c 1"
tmp=$(mktemp -d)
trap 'kill $lg $nio $bp $rd 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
$serverpin .build/release/layergated --socket "$tmp/lg.sock" --data-dir "$tmp/data" --log-level warning &
lg=$!
$serverpin .build/release/layergated --socket "$tmp/nio.sock" --data-dir "$tmp/nio-data" --log-level warning --event-loop nio &
nio=$!
BUSY_POLL_US=${BUSY_POLL_US:-50}
$serverpin .build/release/layergated --socket "$tmp/bp.sock" --data-dir "$tmp/bp-data" --log-level warning --busy-poll-us "$BUSY_POLL_US" &
bp=$!
$serverpin redis-server --port 0 --unixsocket "$tmp/redis.sock" --save "" --appendonly no --daemonize no >/dev/null &
rd=$!
for _ in $(seq 100); do [ -S "$tmp/lg.sock" ] && [ -S "$tmp/nio.sock" ] && [ -S "$tmp/bp.sock" ] && [ -S "$tmp/redis.sock" ] && break; sleep 0.1; done
redis-benchmark -s "$tmp/redis.sock" -t set -d 8192 -r 1000 -n 20000 -q >/dev/null
echo "pinning: servers ${serverpin:-none}, clients ${pin:-none}; ${SECONDS_PER_RUN}s per layergate run; latencies in ms"
printf '%-7s %-17s %12s %8s %8s %8s %9s\n' "N x D" "client" "ops/s" "p50" "p99" "p99.9" "vs redis"
# "GET_PAGE: 123.45 requests per second, p50=… msec, p99=… msec, p99.9=… msec (…)" from either layergate bench.
field() { echo "$1" | sed -E "s/.*$2=([0-9.]+) msec.*/\\1/"; }
for cfg in "1 1" "8 1" "8 16"; do
    set -- $cfg
    n=$1 d=$2
    eout=$($pin clients/c/build/layergate-cbench -s "$tmp/lg.sock" -c "$n" -P "$d" -t "$SECONDS_PER_RUN" --pages 1000 -q --epoll)
    nout=$($pin clients/c/build/layergate-cbench -s "$tmp/nio.sock" -c "$n" -P "$d" -t "$SECONDS_PER_RUN" --pages 1000 -q --epoll)
    cout=$($pin clients/c/build/layergate-cbench -s "$tmp/lg.sock" -c "$n" -P "$d" -t "$SECONDS_PER_RUN" --pages 1000 -q)
    sout=$($pin .build/release/layergate --socket "$tmp/lg.sock" bench -c "$n" -d "$d" -t "$SECONDS_PER_RUN" --pages 1000)
    aout=$($pin .build/release/layergate --socket "$tmp/lg.sock" bench -c "$n" -d "$d" -t "$SECONDS_PER_RUN" --pages 1000 --client async)
    # The same with an 8 KiB array for each page (getPages without into:): a batch of them freed
    # at once has its memory trimmed from the loop thread's arena by glibc and faulted back in by
    # the next (docs/ARCHITECTURE.md, "The clients").
    kout=$($pin .build/release/layergate --socket "$tmp/lg.sock" \
        bench -c "$n" -d "$d" -t "$SECONDS_PER_RUN" --pages 1000 --client async --page-memory per-page)
    rcout=$($pin clients/c/build/layergate-cbench -s "$tmp/redis.sock" --redis -c "$n" -P "$d" -t "$SECONDS_PER_RUN" --pages 1000 -q)
    eops=$(echo "$eout" | sed -E 's/.*GET_PAGE: ([0-9.]+) requests.*/\1/')
    nops=$(echo "$nout" | sed -E 's/.*GET_PAGE: ([0-9.]+) requests.*/\1/')
    cops=$(echo "$cout" | sed -E 's/.*GET_PAGE: ([0-9.]+) requests.*/\1/')
    sops=$(echo "$sout" | sed -E 's/.*GET_PAGE: ([0-9.]+) requests.*/\1/')
    aops=$(echo "$aout" | sed -E 's/.*GET_PAGE: ([0-9.]+) requests.*/\1/')
    kops=$(echo "$kout" | sed -E 's/.*GET_PAGE: ([0-9.]+) requests.*/\1/')
    # About as many requests as the epoll client did, so that redis runs for a similar time.
    count=$(awk -v o="$eops" -v s="$SECONDS_PER_RUN" 'BEGIN { c = int(o * s); if (c < 20000) c = 20000; print c }')
    # CSV: "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    rdout=$($pin redis-benchmark -s "$tmp/redis.sock" -t get -d 8192 -r 1000 -c "$n" -P "$d" -n "$count" --csv | grep '^"GET"' | tr -d '"')
    rops=$(echo "$rdout" | cut -d, -f2)
    ratio() { awk -v a="$1" -v b="$rops" 'BEGIN { printf "%.2f", a / b }'; }
    printf '%-7s %-17s %12s %8s %8s %8s %9s\n' "$n x $d" "cbench --epoll" "$eops" "$(field "$eout" p50)" \
        "$(field "$eout" p99)" "$(field "$eout" p99.9)" "$(ratio "$eops")"
    printf '%-7s %-17s %12s %8s %8s %8s %9s\n' "" "  (nio server)" "$nops" "$(field "$nout" p50)" \
        "$(field "$nout" p99)" "$(field "$nout" p99.9)" "$(ratio "$nops")"
    printf '%-7s %-17s %12s %8s %8s %8s %9s\n' "" "cbench threads" "$cops" "$(field "$cout" p50)" \
        "$(field "$cout" p99)" "$(field "$cout" p99.9)" "$(ratio "$cops")"
    printf '%-7s %-17s %12s %8s %8s %8s %9s\n' "" "swift blocking" "$sops" "$(field "$sout" p50)" \
        "$(field "$sout" p99)" "$(field "$sout" p99.9)" "$(ratio "$sops")"
    printf '%-7s %-17s %12s %8s %8s %8s %9s\n' "" "swift async" "$aops" "$(field "$aout" p50)" \
        "$(field "$aout" p99)" "$(field "$aout" p99.9)" "$(ratio "$aops")"
    printf '%-7s %-17s %12s %8s %8s %8s %9s\n' "" "  (array per page)" "$kops" "$(field "$kout" p50)" \
        "$(field "$kout" p99)" "$(field "$kout" p99.9)" "$(ratio "$kops")"
    printf '%-7s %-17s %12s %8s %8s %8s %9s\n' "" "redis-benchmark" "$rops" "$(echo "$rdout" | cut -d, -f5)" \
        "$(echo "$rdout" | cut -d, -f7)" "-" "1.00"
    printf '%-7s %-17s %12s %8s %8s %8s %9s\n' "" "cbench --redis" "$(echo "$rcout" | sed -E 's/.*REDIS_GET: ([0-9.]+) requests.*/\1/')" \
        "$(field "$rcout" p50)" "$(field "$rcout" p99)" "$(field "$rcout" p99.9)" \
        "$(ratio "$(echo "$rcout" | sed -E 's/.*REDIS_GET: ([0-9.]+) requests.*/\1/')")"
    if [ -n "${RESULTS:-}" ]; then
        for c in "epoll $eout" "nio $nout" "threads $cout" "swift $sout" "swiftasync $aout" "swiftasyncarrays $kout" "rediscbench $rcout"; do
            name=${c%% *} out=${c#* }
            echo "getpage.${n}x$d.$name.ops $(echo "$out" | sed -E 's/.*(GET_PAGE|REDIS_GET): ([0-9.]+) requests.*/\2/')"
            echo "getpage.${n}x$d.$name.p50 $(field "$out" p50)"
            echo "getpage.${n}x$d.$name.p99 $(field "$out" p99)"
            echo "getpage.${n}x$d.$name.p999 $(field "$out" p99.9)"
        done >>"$RESULTS"
        { echo "getpage.${n}x$d.redis.ops $rops"; echo "getpage.${n}x$d.redis.p50 $(echo "$rdout" | cut -d, -f5)"
          echo "getpage.${n}x$d.redis.p99 $(echo "$rdout" | cut -d, -f7)"; } >>"$RESULTS"
    fi
done

ROUNDS=${ROUNDS:-15}
lat="" lat_busy=""
median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
quartiles() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { printf "%.2f-%.2f", a[int(NR / 4) + 1], a[int(3 * NR / 4) + 1] }'; }
echo
echo "cbench --epoll vs redis-benchmark, $ROUNDS rounds of 1 s taking turns (nio: the server on --event-loop nio;"
echo "same client: cbench --epoll over cbench --redis, in the same rounds)"
printf '%-7s %14s %14s %8s %12s %10s %12s %12s\n' "N x D" "layergated" "redis" "ratio" "(middle 50%)" "nio ratio" "same client" "(middle 50%)"
for cfg in "1 1" "8 1" "8 16"; do
    set -- $cfg
    n=$1 d=$2 e="" r="" q="" nq="" sq=""
    lat_e50="" lat_e99="" lat_r50="" lat_r99="" lat_s50="" lat_s99="" lat_b50="" lat_b99=""
    for i in $(seq "$ROUNDS"); do
        lgrun() { $pin clients/c/build/layergate-cbench -s "$tmp/${1:-lg}.sock" -c "$n" -P "$d" -t 1 --pages 1000 -q --epoll; }
        ops() { echo "$1" | sed -E 's/.*(GET_PAGE|REDIS_GET): ([0-9.]+) requests.*/\2/'; }
        # redis-benchmark runs a count, not a time: about a second's worth at the last rate seen.
        rdrun() { $pin redis-benchmark -s "$tmp/redis.sock" -t get -d 8192 -r 1000 -c "$n" -P "$d" -n "$1" --csv \
            | grep '^"GET"' | tr -d '"'; }
        if [ $((i % 2)) = 1 ]; then
            eout=$(lgrun); eo=$(ops "$eout"); rdout=$(rdrun "$(awk -v o="$eo" 'BEGIN { c = int(o); print c < 5000 ? 5000 : c }')")
        else
            rdout=$(rdrun "${last:-20000}"); eout=$(lgrun); eo=$(ops "$eout")
        fi
        ro=$(echo "$rdout" | cut -d, -f2)
        no=$(ops "$(lgrun nio)")
        sout=$($pin clients/c/build/layergate-cbench -s "$tmp/redis.sock" --redis -c "$n" -P "$d" -t 1 --pages 1000 -q)
        so=$(ops "$sout")
        sq="$sq $(awk -v a="$eo" -v b="$so" 'BEGIN { print a / b }')"
        last=$(awk -v o="$ro" 'BEGIN { c = int(o); print c < 5000 ? 5000 : c }')
        e="$e $eo" r="$r $ro" q="$q $(awk -v a="$eo" -v b="$ro" 'BEGIN { print a / b }')"
        nq="$nq $(awk -v a="$no" -v b="$ro" 'BEGIN { print a / b }')"
        lat_e50="$lat_e50 $(field "$eout" p50)" lat_e99="$lat_e99 $(field "$eout" p99)"
        lat_r50="$lat_r50 $(echo "$rdout" | cut -d, -f5)" lat_r99="$lat_r99 $(echo "$rdout" | cut -d, -f7)"
        lat_s50="$lat_s50 $(field "$sout" p50)" lat_s99="$lat_s99 $(field "$sout" p99)"
        if [ "$n x $d" = "1 x 1" ]; then
            bout=$(lgrun bp)
            lat_b50="$lat_b50 $(field "$bout" p50)" lat_b99="$lat_b99 $(field "$bout" p99)"
        fi
    done
    printf '%-7s %14.0f %14.0f %8.2f %12s %10.2f %12.2f %12s\n' "$n x $d" "$(echo $e | median)" "$(echo $r | median)" "$(echo $q | median)" \
        "$(echo $q | quartiles)" "$(echo $nq | median)" "$(echo $sq | median)" "$(echo $sq | quartiles)"
    if [ -n "${RESULTS:-}" ]; then
        { echo "getpage.${n}x$d.ratio $(echo $q | median)"; echo "getpage.${n}x$d.nio_ratio $(echo $nq | median)"; echo "getpage.${n}x$d.ratio_middle $(echo $q | quartiles)"
          echo "getpage.${n}x$d.rounds.epoll.ops $(echo $e | median)"; echo "getpage.${n}x$d.rounds.redis.ops $(echo $r | median)"
          echo "getpage.${n}x$d.same_client_ratio $(echo $sq | median)"; echo "getpage.${n}x$d.same_client_middle $(echo $sq | quartiles)"
          # Latency, each side's median over the same rounds (goal 2 reads the 1 x 1 ones).
          for side in "epoll $lat_e50 / $lat_e99" "redis $lat_r50 / $lat_r99" "rediscbench $lat_s50 / $lat_s99" \
                      "busypoll $lat_b50 / $lat_b99"; do
              name=${side%% *} rest=${side#* }
              [ -z "$(echo "$rest" | tr -d '/ ')" ] && continue  # busy-poll: 1 x 1 only
              echo "getpage.${n}x$d.rounds.$name.p50 $(echo ${rest% / *} | median)"
              echo "getpage.${n}x$d.rounds.$name.p99 $(echo ${rest#* / } | median)"
          done; } >>"$RESULTS"
    fi
    [ -n "$lat_b50" ] && lat_busy="$(echo $lat_b50 | median), p99 $(echo $lat_b99 | median)"
    lat="$lat$(printf '%-7s %10s %10s %10s %10s %12s %12s' "$n x $d" "$(echo $lat_e50 | median)" "$(echo $lat_e99 | median)" \
        "$(echo $lat_r50 | median)" "$(echo $lat_r99 | median)" "$(echo $lat_s50 | median)" "$(echo $lat_s99 | median)")
"
done
echo
echo "latency in ms, each the median over the same rounds: cbench --epoll, redis-benchmark, cbench --redis"
printf '%-7s %10s %10s %10s %10s %12s %12s\n' "N x D" "lg p50" "lg p99" "redis p50" "redis p99" "cbench-r p50" "cbench-r p99"
printf '%s' "$lat"
if [ -n "$lat_busy" ]; then echo "with --busy-poll-us $BUSY_POLL_US, 1 x 1: p50 $lat_busy ms (same rounds)"; fi
