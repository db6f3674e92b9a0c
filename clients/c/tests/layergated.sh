# Sourced by the C tests' scripts: start_layergated NAME LAYERGATED [FLAGS...]
# starts layergated on $dir/s over a fresh temporary data directory ($dir),
# and ends it and removes $dir on exit. NAME prefixes its failure.
start_layergated() {
    name=$1 layergated=$2
    shift 2
    dir=$(mktemp -d)
    pid=""
    trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
    "$layergated" --socket "$dir/s" --data-dir "$dir/data" --log-level warning "$@" &
    pid=$!
    for _ in $(seq 100); do [ -S "$dir/s" ] && break; sleep 0.1; done
    [ -S "$dir/s" ] || { echo "$name: layergated did not start"; exit 1; }
}
