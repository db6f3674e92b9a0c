#!/bin/sh
# Runs each Swift fuzz target (Sources/LayerGateFuzz) under libFuzzer for $1
# seconds, from the committed seeds (Fuzz/corpus/<target>) plus what earlier
# runs found (.build/fuzz-corpus/<target>). Needs the binary that `make fuzz`
# builds. A crash stops it with the input's path and how to replay it.
set -eu
seconds=${1:-60}
bin=.build/fuzz/debug/layergate-fuzz
[ -x "$bin" ] || { echo "fuzz.sh: $bin is not built (run make fuzz)"; exit 1; }
mkdir -p .build/fuzz-artifacts
for target in request response layer wal; do
    mkdir -p ".build/fuzz-corpus/$target"
    log=".build/fuzz-artifacts/$target.log"
    echo "fuzz: $target for $seconds s"
    if ! SWIFT_BACKTRACE=enable=no LAYERGATE_FUZZ_TARGET=$target "$bin" -max_total_time="$seconds" -max_len=65536 -timeout=10 \
        -print_final_stats=1 -artifact_prefix=".build/fuzz-artifacts/$target-" \
        ".build/fuzz-corpus/$target" "Fuzz/corpus/$target" 2>"$log"; then
        tail -n 40 "$log"
        echo "fuzz: $target crashed; the input is in .build/fuzz-artifacts/ (replay: .build/debug/layergate-fuzz $target FILE)."
        echo "fuzz: once fixed, copy it to Fuzz/corpus/$target/regression-<what> so the test suite replays it."
        exit 1
    fi
    grep -E "^Done" "$log" || true
done
