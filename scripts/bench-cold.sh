#!/usr/bin/env bash
# Cold reads, in the manner of Neon's pagebench: random GetPage over a tenant
# whose layer files are many times the page cache, with the OS page cache for
# them dropped before every run, next to the disk alone: random 8 KiB O_DIRECT
# preads over the same files with as many threads as there are clients,
# measured in the same run. Prints ops/s and p50/p99/p99.9 of one GetPage,
# and the server's latency over the disk's (goal: p99 < 0.75 ms at 8 clients,
# within 1.5x of the disk's). The disk is measured again right before each
# GetPage run (RAW_SECONDS), and each run is compared with that measurement:
# these disks stall for seconds at a time, and one measurement at the start
# once stood for minutes of runs with a p99 of 22 ms.
# The clients are connections on one epoll thread (as pagebench's async
# clients and redis-benchmark run); CLIENT=threads gives each its own thread.
# Each GetPage run is made with the server reading layer files past the OS
# page cache (--layer-reads direct, the default: every miss of the server's
# page cache is a read of the disk, which the event loop makes itself through
# io_uring), and through it (buffered: a miss reads ahead, and later misses
# often find their bytes in the OS page cache), and past it with the misses
# handed to read threads instead (direct-threads: --miss-reads threads), and
# past it with the loop polling for a while after each event instead of
# sleeping (direct-poll: --busy-poll-us 200, opt-in: it spends CPU for the
# wake-up a completion would otherwise cost).
# Then both ways again as an open loop at one offered load (RATE, each
# client's GetPages a second, at Poisson arrivals, as pagebench's
# --per-target-rate-limit; RATE=0 skips them), the disk measured at the same
# load: each latency counts from when its read fell due. A closed loop of 8
# clients measures how fast the machine finishes reads (its latency is the
# clients over the throughput), and on 2 cores its baseline, 8 threads of
# preads, is as CPU-bound as the server; at one load both say how long a read
# takes. The default, 1,250 a second per client (10k in all), is about the
# load of the measurement this goal was filed with (10.8k GetPages a second)
# and a third of what the server does at 8 clients in a closed loop.
#   scripts/bench-cold.sh                  # 2 GiB of images (2 versions of 1 GiB), 128 MiB page cache
#   CLIENTS="8" RUN_SECONDS=20 LAYER_READS=direct scripts/bench-cold.sh
#   BUILD=0 uses the release binaries already built; SERVER=PATH another layergated;
#   SERVER_ARGS="--busy-poll-us 50" more flags for it. The data set is kept in
#   DATA (default .layergate/bench-cold; it must be on a real disk, not a
#   tmpfs) and reused while its shape (PAGES, VERSIONS) stays the same.
# RESULTS=FILE also appends every figure to FILE as "name value" lines (make bench reads them).
# Root drops every clean page cache before each run (echo 3 > drop_caches);
# without root only the layer files are evicted (posix_fadvise DONTNEED).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE_MIB=${CACHE_MIB:-128}
PAGES=${PAGES:-131072}
VERSIONS=${VERSIONS:-2}
CLIENTS=${CLIENTS-"1 8"}
LAYER_READS=${LAYER_READS-"direct buffered direct-threads direct-poll"}
client_mode=--epoll
[ "${CLIENT:-epoll}" = threads ] && client_mode=
RATE=${RATE:-1250}
RATE_READS=${RATE_READS-"direct buffered"}
RUN_SECONDS=${RUN_SECONDS:-10}
RAW_SECONDS=${RAW_SECONDS:-$(( RUN_SECONDS > 7 ? RUN_SECONDS / 2 : 3 ))}
DATA=${DATA:-.layergate/bench-cold}
tenant=be0c0000000000000000000000000003
if [ "${BUILD:-1}" != 0 ]; then
    echo "bench-cold: building layergated (release) and the C client's benches"
    scripts/swift.sh build -c release --product layergated >/dev/null
fi
make -s -C clients/c build/layergate-pagebench >/dev/null
bench=clients/c/build/layergate-pagebench
mkdir -p "$DATA"
sock=$DATA/layergate.sock
dir=$DATA/data/tenants/$tenant
server=""
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null || true' EXIT
# A port free now (METRICS_PORT to choose one): the server takes it at once.
metrics_port=${METRICS_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo 19871)}
# start [READS]: the server, reading layer files READS (direct, its default, when not given).
start() {
    local mode=${1:-direct} reads=()
    case "$mode" in
    direct-threads) reads=(--layer-reads direct --miss-reads threads) ;;
    direct-poll) reads=(--layer-reads direct --busy-poll-us 200) ;;
    *) reads=(--layer-reads "$mode") ;;
    esac
    ${SERVER:-.build/release/layergated} --socket "$sock" --data-dir "$DATA/data" --page-cache-mib "$CACHE_MIB" \
        --metrics-listen "127.0.0.1:$metrics_port" --log-level warning "${reads[@]}" ${SERVER_ARGS:-} &
    server=$!
    for _ in $(seq 300); do [ -S "$sock" ] && return; sleep 0.1; done
    echo "bench-cold: layergated did not start" >&2
    exit 1
}
stop() {
    kill -TERM "$server"
    wait "$server" || true
    server=""
}
# A data set written before layer format version 2 (its images span two blocks) is written again.
# -quit, not | head -1: under pipefail, find writing on after head is gone (SIGPIPE) would end the script.
layer=$(find "$dir" -maxdepth 1 -type f ! -name index.json ! -name '*___temp' -print -quit 2>/dev/null || true)
if [ -n "$layer" ] && [ "$(od -An -tu4 --endian=big -j8 -N4 "$layer" | tr -d ' ')" != 2 ]; then
    echo "bench-cold: $DATA holds layer files of an older format: writing the data set again"
    rm -rf "$DATA/data"
fi
start
echo "bench-cold: loading $PAGES keys x $VERSIONS versions into $DATA (kept for the next run)"
$bench load -s "$sock" --tenant $tenant --pages "$PAGES" --versions "$VERSIONS"
stop
layer_mib=$(find "$dir" -maxdepth 1 -type f ! -name index.json -printf '%s\n' | awk '{ s += $1 } END { printf "%d", s / 1048576 }')
if [ "$layer_mib" -lt $((4 * CACHE_MIB)) ]; then
    echo "bench-cold: $layer_mib MiB of layers is under 4x the $CACHE_MIB MiB page cache: raise PAGES" >&2
    exit 1
fi
echo "bench-cold: $layer_mib MiB of layer files, page cache $CACHE_MIB MiB ($((layer_mib / CACHE_MIB))x); $RUN_SECONDS s per run"
# The figures of get's and raw's first line (a second says how many reads fell due unsent).
field() { echo "$1" | sed -nE "1s/.*[ ,]$2 ([0-9.]+) ?us.*/\1/p"; }
ops() { echo "$1" | sed -nE '1s/.*: ([0-9]+) ops\/s.*/\1/p'; }
# The running server's page-cache counters: misses, filled from the OS page cache, read by the loop.
counters() {
    curl -s "http://127.0.0.1:$metrics_port/metrics" | awk '
        /^layergate_page_cache_misses_total / { m = $2 } /^layergate_page_cache_os_loads_total / { o = $2 }
        /^layergate_page_cache_loop_reads_total / { u = $2 } END { print m + 0, o + 0, u + 0 }'
}
# misses [BEFORE]: who filled the page cache's misses since BEFORE (counters' output; default: the start).
misses() {
    counters | awk -v before="${1:-0 0 0}" '
        { split(before, b, " "); m = $1 - b[1]; o = $2 - b[2]; u = $3 - b[3] }
        END { if (m > 0) printf "page cache misses %d: %d (%.0f %%) filled by the event loop from the OS page cache, %d (%.0f %%) read from the disk by the event loop (io_uring), %d by read threads", m, o, 100 * o / m, u, 100 * u / m, m - o - u }'
}
# record CLIENTS NAME OUTPUT: its figures into RESULTS as cold.CLIENTS.NAME.*.
record() {
    [ -n "${RESULTS:-}" ] || return 0
    { echo "cold.$1.$2.ops $(ops "$3")"; echo "cold.$1.$2.p50 $(field "$3" p50)"
      echo "cold.$1.$2.p99 $(field "$3" p99)"; echo "cold.$1.$2.p999 $(field "$3" p99.9)"; } >>"$RESULTS"
}
# raw CLIENTS NAME [RATE]: the disk alone, right before the run NAME: $raw, in RESULTS (cold.CLIENTS.NAME.raw.*);
# kept in raws (a closed loop's) or raws_at (at RATE).
raw() {
    $bench evict --dir "$dir" >/dev/null
    raw=$($bench raw --dir "$dir" -c "$1" -t "$RAW_SECONDS" ${3:+--rate "$3"})
    if [ -n "${3:-}" ]; then raws_at+=("$raw"); else raws+=("$raw"); fi
    record "$1" "$2.raw" "$raw"
}
# median_raw RAW...: their median ops/s and percentiles, as one line of raw's output.
median_raw() {
    local q out="raw O_DIRECT pread, median of $# runs:"
    out="$out $(for r in "$@"; do ops "$r"; done | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }') ops/s"
    for q in p50 p99 p99.9; do
        out="$out, $q $(for r in "$@"; do field "$r" "$q"; done | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }') us"
    done
    echo "$out"
}
# row CLIENTS NAME OUTPUT: a line of the last table, next to the disk's figures ($raw).
row() {
    rows+=("$(awk -v c="$1" -v m="$2" -v o="$(ops "$3")" -v p50="$(field "$3" p50)" -v p99="$(field "$3" p99)" \
        -v p999="$(field "$3" p99.9)" -v r50="$(field "$raw" p50)" -v r99="$(field "$raw" p99)" -v r999="$(field "$raw" p99.9)" \
        'BEGIN { printf "%-8s %-22s %8d %7d %7d %7d   %7d %7d %7d   %5.2f %5.2f", c, m, o, p50, p99, p999, r50, r99, r999, p50 / r50, p99 / r99 }')")
}
# measure CLIENTS READS MODE [RATE]: the disk, then a fresh server (an empty page cache) reading
# layer files READS, GetPage at MODE (latest, past), a closed loop or at RATE; one row.
measure() {
    local c=$1 reads=$2 mode=$3 rate=${4:-} flag="" name=$3
    [ "$mode" = past ] && flag=--past
    # Direct, the default, keeps the plain names that make bench reads.
    [ "$reads" = direct ] || name=$name-$reads
    [ -z "$rate" ] || name=$name-at
    raw "$c" "$name" "$rate"
    echo "  $raw"
    $bench evict --dir "$dir" >/dev/null
    start "$reads"
    local before="0 0 0"
    if [ -n "$rate" ]; then
        # An open loop does not wait for the server: the layer files' first opening and the index
        # blocks' first reads (tens of ms) would queue the first hundreds of reads behind them. A
        # second of reads first, of other keys (--seed), whose OS page cache is dropped again; the
        # server's stays full, as in a closed loop's later seconds.
        $bench get -s "$sock" --tenant $tenant --pages "$PAGES" --versions "$VERSIONS" -c "$c" -t 1 $flag $client_mode \
            --seed 1 >/dev/null
        $bench evict --dir "$dir" >/dev/null
        before=$(counters)
    fi
    got=$($bench get -s "$sock" --tenant $tenant --pages "$PAGES" --versions "$VERSIONS" -c "$c" -t "$RUN_SECONDS" \
        $flag $client_mode ${rate:+--rate "$rate"})
    split=$(misses "$before")
    stop
    echo "  $got ($reads layer reads)"
    echo "    $split"
    record "$c" "$name" "$got"
    row "$c" "$name" "$got"
}
# floor CLIENTS [RATE]: the same client on 1,000 pages that stay cached (a first pass loads them).
floor() {
    local name=cached floor
    [ -z "${2:-}" ] || name=cached-at
    start
    $bench get -s "$sock" --tenant $tenant --pages 1000 --versions "$VERSIONS" -c "$1" -t 1 $client_mode >/dev/null
    floor=$($bench get -s "$sock" --tenant $tenant --pages 1000 --versions "$VERSIONS" -c "$1" -t "$RUN_SECONDS" \
        $client_mode ${2:+--rate "$2"})
    stop
    echo "  cached floor, $floor"
    record "$1" $name "$floor"
    row "$1" $name "$floor"
}
rows=()
if [ -n "${RESULTS:-}" ]; then echo "cold.rate $RATE" >>"$RESULTS"; fi
for c in $CLIENTS; do
    raws=() raws_at=()
    for reads in $LAYER_READS; do
        for mode in latest past; do measure "$c" "$reads" $mode; done
    done
    for reads in $([ "$RATE" = 0 ] || echo "$RATE_READS"); do
        for mode in latest past; do measure "$c" "$reads" $mode "$RATE"; done
    done
    # The disk over the whole set of runs: its spread says how steady it was. The floors: the socket
    # and the scheduler alone, against the median disk of the same kind of loop.
    if [ ${#raws[@]} -gt 0 ]; then
        raw=$(median_raw "${raws[@]}")
        echo "  $raw; p99 from $(for r in "${raws[@]}"; do field "$r" p99; done | sort -g | sed -n '1p;$p' | paste -sd- ) us"
        record "$c" raw "$raw"
        floor "$c"
    fi
    if [ ${#raws_at[@]} -gt 0 ]; then
        raw=$(median_raw "${raws_at[@]}")
        echo "  at $RATE a second per thread, $raw"
        record "$c" raw-at "$raw"
        floor "$c" "$RATE"
    fi
done
echo
printf '%-8s %-22s %8s %7s %7s %7s   %7s %7s %7s   %5s %5s\n' clients lsn "ops/s" "p50" "p99" "p99.9" "raw p50" "raw p99" "p99.9" "x p50" "x p99"
printf '%s\n' "${rows[@]}"
echo "(latencies in µs; raw: O_DIRECT 8 KiB preads of the same files, as many threads as clients, for $RAW_SECONDS s right before"
echo " each run (the cached floor: the median of those); x: GetPage / raw;"
echo " -buffered: the server reads layer files through the OS page cache (--layer-reads buffered), else past it (direct);"
echo " -direct-threads: direct, each miss handed to a read thread (--miss-reads threads), not read by the event loop's io_uring;"
echo " -direct-poll: direct, the event loop polling 200 µs after each event before it sleeps (--busy-poll-us 200);"
echo " -at: an open loop, each client's GetPages (the disk's threads' preads) due $RATE times a second, each latency from its due time;"
echo " cached: 1,000 pages that stay in the page cache, the same client: the floor the socket and scheduler set"
echo " (cached-at: at the open loop's rate, against the median disk at that rate);"
echo " clients: ${CLIENT:-epoll} (CLIENT=threads: a thread each))"
