#!/usr/bin/env bash
# Regenerates the protoc-c output for Protocol/layergate.proto into the
# CLayerGateProto target and the C client (both compile Protocol/c). The output is committed; never edit it by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc-c >/dev/null || {
    echo "gen-proto: installing protobuf-c-compiler (protoc-c)"
    apt-get update -qq && apt-get install -y -qq protobuf-c-compiler
}
out=Protocol/c
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd Protocol && protoc-c --c_out="$tmp" layergate.proto)
mkdir -p "$out/include"
cp "$tmp/layergate.pb-c.c" "$out/layergate.pb-c.c"
cp "$tmp/layergate.pb-c.h" "$out/include/layergate.pb-c.h"
echo "gen-proto: wrote $out/layergate.pb-c.c and $out/include/layergate.pb-c.h ($(protoc-c --version | head -1))"
