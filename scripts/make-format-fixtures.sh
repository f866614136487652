#!/usr/bin/env bash
# Writes the golden fixtures of a release's on-disk formats into
# storage/tests/fixtures/released/<version>/, using that release's own binary:
#   store.dump       a one-node data directory (log with entries before and after a snapshot,
#                    state machine, snapshot file), dumped as text by the store_dump example
#   backup.snapshot  a backup (`ctl backup`: the snapshot file format)
#   expect.txt       what they hold: cell, version, electrical_tilt
# storage/tests/golden_formats.rs opens them with the current code. Run once per release,
# with the binary of that release (scripts/upgrade-from-previous.sh builds the previous one):
#
#   scripts/make-format-fixtures.sh run/upgrade-from-previous/target-0.1.0/release/sonraft
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${1:?usage: $0 SONRAFT_BINARY_OF_THE_RELEASE}
VERSION=$("$BIN" --version | awk '{print $2}')
OUT="$ROOT/storage/tests/fixtures/released/$VERSION"
TMP=$(mktemp -d)
PID=""
trap '[[ -n "$PID" ]] && kill "$PID" 2> /dev/null; rm -rf "$TMP"' EXIT
export SONRAFT_CLUSTER_SECRET=fixture-cluster-secret SONRAFT_TOKEN=fixture-token
"$BIN" node --id 1 --site site-a --data-dir "$TMP/data" --raft-addr 127.0.0.1:0 \
    --api-addr 127.0.0.1:0 --timing loopback > "$TMP/node.log" 2>&1 &
PID=$!
for _ in $(seq 1 200); do [[ -f "$TMP/data/addresses.json" ]] && break; sleep 0.05; done
API=$(sed -n 's/.*"api_addr":"\([^"]*\)".*/\1/p' "$TMP/data/addresses.json")
export SONRAFT_NODES="http://$API"
"$BIN" ctl init > /dev/null
for _ in $(seq 1 200); do curl -sf "http://$API/readyz" > /dev/null && break; sleep 0.05; done
cat > "$TMP/image.json" << 'JSON'
{"sites": [{"id": "UPG", "name": "upgrade check", "lat": 48.1, "lon": 11.5}],
 "cells": [
  {"id": "UPG-1", "site": "UPG", "rat": "LTE", "pci": 101, "arfcn": 1300, "azimuth": 0},
  {"id": "UPG-2", "site": "UPG", "rat": "LTE", "pci": 102, "arfcn": 1300, "azimuth": 120},
  {"id": "UPG-3", "site": "UPG", "rat": "NR", "pci": 103, "arfcn": 632628, "azimuth": 240}],
 "relations": [{"source": "UPG-1", "target": "UPG-2"}, {"source": "UPG-2", "target": "UPG-1"}]}
JSON
"$BIN" ctl import "$TMP/image.json" > /dev/null
"$BIN" ctl propose --set cell/UPG-1:electrical_tilt=35 > /dev/null
"$BIN" ctl propose --set cell/UPG-2:electrical_tilt=42 > /dev/null
curl -sf -X POST -H "Authorization: Bearer $SONRAFT_TOKEN" "http://$API/snapshot" > /dev/null
"$BIN" ctl propose --set cell/UPG-3:electrical_tilt=33 > /dev/null
"$BIN" ctl propose --set cell/UPG-2:electrical_tilt=44 > /dev/null
"$BIN" ctl propose --set relation/UPG-1/UPG-2:cio_db=2 > /dev/null
mkdir -p "$OUT"
"$BIN" ctl backup "$OUT/backup.snapshot" > /dev/null
{
    echo "# cell version electrical_tilt, as $VERSION wrote them"
    for c in UPG-1 UPG-2 UPG-3; do
        j=$("$BIN" ctl cell "$c" --json)
        echo "$c $(grep -o '"version":[0-9]*' <<< "$j" | head -1 | cut -d: -f2) $(grep -o '"electrical_tilt":-\{0,1\}[0-9]*' <<< "$j" | head -1 | cut -d: -f2)"
    done
} > "$OUT/expect.txt"
kill -TERM "$PID"; wait "$PID" || true; PID=""
(cd "$ROOT" && cargo run --quiet -p sonraft-storage --example store_dump -- "$TMP/data") > "$OUT/store.dump"
echo "fixtures of $VERSION written to $OUT: $(du -sh "$OUT" | cut -f1)"
cat "$OUT/expect.txt"
