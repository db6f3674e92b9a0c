#!/usr/bin/env bash
# Encodes every Protocol/testdata/*.txtpb (protobuf text format; its first line
# names the message type) into the .bin beside it, with protoc's own encoder
# (libprotoc, through protoc-c --encode), so that the vectors do not come from
# the protobuf-c or Swift code they test. The .bin files are committed.
#   scripts/gen-testdata.sh          write the .bin files
#   scripts/gen-testdata.sh --check  fail if a committed .bin differs from its .txtpb
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc-c >/dev/null || {
    echo "gen-testdata: installing protobuf-c-compiler (protoc-c)"
    apt-get update -qq && apt-get install -y -qq protobuf-c-compiler
}
check=0
[ "${1:-}" = "--check" ] && check=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0 bad=0
for src in Protocol/testdata/*.txtpb; do
    type=$(sed -n '1s/^# proto-message: //p' "$src")
    [ -n "$type" ] || { echo "gen-testdata: $src: first line must be '# proto-message: TYPE'"; exit 1; }
    out="${src%.txtpb}.bin"
    protoc-c --proto_path=Protocol --encode="$type" layergate.proto < "$src" > "$tmp/out.bin"
    if [ $check = 1 ]; then
        cmp -s "$tmp/out.bin" "$out" || { echo "gen-testdata: $out is stale (run scripts/gen-testdata.sh)"; bad=$((bad + 1)); }
    else
        cp "$tmp/out.bin" "$out"
    fi
    n=$((n + 1))
done
for bin in Protocol/testdata/*.bin; do
    [ -e "${bin%.bin}.txtpb" ] || { echo "gen-testdata: $bin has no .txtpb"; bad=$((bad + 1)); }
done
[ $bad = 0 ] || exit 1
echo "gen-testdata: $n vectors $([ $check = 1 ] && echo "match their .txtpb" || echo "written to Protocol/testdata")"
