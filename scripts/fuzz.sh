#!/bin/sh
# Runs every fuzz target under libFuzzer for $1 seconds, all at once: the
# Swift targets (Sources/LayerGateFuzz, through .build/fuzz/debug/layergate-fuzz)
# from their committed seeds (Fuzz/corpus/<target>) plus what earlier runs
# found (.build/fuzz-corpus/<target>), and the C client's response target
# (clients/c/build/fuzz/fuzz_response, seeds in clients/c/fuzz/corpus). Needs
# the binaries `make fuzz` builds. A crash fails it, naming the input and how
# to replay it.
set -u
seconds=${1:-60}
bin=.build/fuzz/debug/layergate-fuzz
cbin=clients/c/build/fuzz/fuzz_response
for b in "$bin" "$cbin"; do [ -x "$b" ] || { echo "fuzz.sh: $b is not built (run make fuzz)"; exit 1; }; done
out=.build/fuzz-artifacts
mkdir -p "$out" clients/c/build/fuzz/corpus
pids=""
for target in request response layer wal; do
    mkdir -p ".build/fuzz-corpus/$target"
    SWIFT_BACKTRACE=enable=no LAYERGATE_FUZZ_TARGET=$target "$bin" -max_total_time="$seconds" -max_len=65536 -timeout=10 \
        -artifact_prefix="$out/$target-" ".build/fuzz-corpus/$target" "Fuzz/corpus/$target" >"$out/$target.log" 2>&1 &
    pids="$pids $!:$target"
done
"$cbin" -max_total_time="$seconds" -max_len=65536 -timeout=10 -artifact_prefix="$out/c-response-" \
    clients/c/build/fuzz/corpus clients/c/fuzz/corpus >"$out/c-response.log" 2>&1 &
pids="$pids $!:c-response"
echo "fuzz: request, response, layer, wal and c-response, $seconds s each, at once"
failed=0
for entry in $pids; do
    pid=${entry%%:*} target=${entry#*:}
    if wait "$pid"; then
        echo "fuzz: $target: $(grep -E '^Done' "$out/$target.log")"
    else
        failed=1
        tail -n 40 "$out/$target.log"
        echo "fuzz: $target crashed; the input is in $out/ ($target-*)."
        [ "$target" = c-response ] && echo "fuzz: replay: $cbin FILE; once fixed, copy it to clients/c/fuzz/corpus/regression-<what>." \
            || echo "fuzz: replay: .build/debug/layergate-fuzz $target FILE; once fixed, copy it to Fuzz/corpus/$target/regression-<what>."
    fi
done
exit $failed
