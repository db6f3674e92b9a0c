#!/usr/bin/env bash
# Remote storage against a local S3 endpoint (moto on loopback, started here):
# how fast one server uploads what it ingests, how long a second server with
# an empty disk takes to attach the tenant (index only: it serves at once),
# what the first read of a layer that is only in the store costs against
# reads once it is local, and against curl fetching the same object (the
# baseline, measured in the same run; printed as a ratio).
# Not a test; moto keeps objects in Python's memory, so the figures are
# moto's as much as ours.
#   scripts/bench-remote.sh               # 256 MiB of 8 KiB images
#   MIB=1024 scripts/bench-remote.sh      # a 1 GiB tenant
#   BUILD=0 uses the release binaries already built.
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${MIB:-256}
if [ "${BUILD:-1}" != 0 ]; then
    echo "bench-remote: building layergated and layergate (release)"
    scripts/swift.sh build -c release --product layergated >/dev/null
    scripts/swift.sh build -c release --product layergate >/dev/null
fi
moto=$(command -v moto_server || echo "$HOME/.pyenv/shims/moto_server")
[ -x "$moto" ] || { echo "bench-remote: moto_server is not installed (make moto)"; exit 1; }
work=$(mktemp -d /tmp/layergate-bench-remote.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$((20000 + RANDOM % 30000))
sh -c "exec \"$moto\" -H 127.0.0.1 -p $port" >"$work/moto.log" 2>&1 &
pids+=($!)
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
curl -s --aws-sigv4 aws:amz:us-east-1:s3 --user testing:testing -X PUT "http://127.0.0.1:$port/bench" -o /dev/null
tenant=be0c0000000000000000000000000013
cli=.build/release/layergate
serve() {  # serve NAME: a server on its own socket and data dir, with the store
    .build/release/layergated --socket "$work/$1.sock" --data-dir "$work/$1" --remote-storage s3://bench/lg \
        --s3-endpoint "http://127.0.0.1:$port" --log-level warning &
    pids+=($!)
    for _ in $(seq 300); do [ -S "$work/$1.sock" ] && return; sleep 0.1; done
    echo "bench-remote: layergated did not start" >&2; exit 1
}
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
now() { date +%s.%N; }
serve a
$cli --socket "$work/a.sock" create-tenant $tenant >/dev/null
pages=$((MIB * 128))
t0=$(now)
$cli --socket "$work/a.sock" put $tenant --generate $pages --keys $pages >/dev/null
$cli --socket "$work/a.sock" compact $tenant >/dev/null
t1=$(now)
while :; do
    s=$($cli --socket "$work/a.sock" --json status $tenant)
    [ "$(echo "$s" | field layers_pending_upload)" = 0 ] &&
        [ "$(echo "$s" | field remote_consistent_lsn)" = "$(echo "$s" | field disk_consistent_lsn)" ] && break
    sleep 0.2
done
t2=$(now)
bytes=$(echo "$s" | python3 -c "import json,sys; print(sum(l['size'] for l in json.load(sys.stdin)['layers']))")
generation=$(echo "$s" | field generation)
python3 - "$t0" "$t1" "$t2" "$bytes" <<'PY'
import sys
t0, t1, t2, b = map(float, sys.argv[1:])
mib = b / 2**20
print(f"bench-remote: ingest+compact {t1-t0:.1f} s; layers {mib:.0f} MiB uploaded {t2-t0:.1f} s after the first put "
      f"({mib/(t2-t0):.0f} MiB/s overall), {t2-t1:.1f} s after the compaction ended")
PY
t3=$(now)
$cli --socket "$work/a.sock" detach $tenant >/dev/null
t4=$(now)
serve b
t5=$(now)
$cli --socket "$work/b.sock" attach $tenant $((generation + 1))
t6=$(now)
python3 - "$t3" "$t4" "$t5" "$t6" "$bytes" <<'PY'
import sys
t3, t4, t5, t6, b = map(float, sys.argv[1:])
print(f"bench-remote: detach {t4-t3:.2f} s; attach of a {b/2**20:.0f} MiB tenant on an empty disk {t6-t5:.2f} s "
      f"(the remote index only: layers download as reads need them)")
PY
echo "bench-remote: first reads on the attached server (each downloads its layer), then reads once it is local:"
$cli --socket "$work/b.sock" --json first-reads $tenant > "$work/first.json"
# The baseline, in the same run: curl fetching each layer's object from moto into a file, signed the same way.
for layer in $(python3 -c "import json; [print(r['layer']) for r in json.load(open('$work/first.json'))]"); do
    s=$(now)
    curl -s --aws-sigv4 aws:amz:us-east-1:s3 --user testing:testing -o "$work/curl.obj" \
        "http://127.0.0.1:$port/bench/lg/tenants/$tenant/$layer"
    e=$(now)
    echo "$layer $(python3 -c "print(($e - $s) * 1000)")"
done > "$work/curl.txt"
python3 - "$work/first.json" "$work/curl.txt" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
curl = dict(line.split() for line in open(sys.argv[2]))
print("     MiB  first read (ms)  curl GET (ms)  ratio  local page (ms)  cached (ms)")
ratios = []
for r in rows:
    c = float(curl[r["layer"]])
    ratio = float(r["first_ms"]) / c
    ratios.append(ratio)
    print(f"{int(r['bytes'])/2**20:8.1f}  {float(r['first_ms']):15.1f}  {c:13.1f}  {ratio:5.2f}  "
          f"{float(r['local_ms']):15.3f}  {float(r['cached_ms']):11.3f}")
ratios.sort()
print(f"bench-remote: first read / curl GET of the same object, median {ratios[len(ratios)//2]:.2f} "
      "(a first read downloads the whole layer, checks it, publishes it through the gate and opens it)")
PY
