#!/usr/bin/env bash
# What a WAL commit costs on this disk, by how it is written: 512 KiB and
# 1.5 MiB commits (one and three 64-image puts), each fsynced, through the
# page cache or O_DIRECT, appended to a growing file or into a zero-filled one.
# layergated appends with O_DIRECT (IO/AppendOnlyFile.swift); this shows why.
#   scripts/bench-wal-writes.sh            (in .layergate, on the data directory's disk)
#   DIR=/mnt/disk TOTAL_MIB=1024 scripts/bench-wal-writes.sh
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${DIR:-.layergate}
mkdir -p "$dir" .build
cc -O2 -o .build/wal-writes scripts/wal-writes.c
for kib in 512 1536; do .build/wal-writes "$dir/wal-writes.tmp" "$kib" "${TOTAL_MIB:-512}"; done
