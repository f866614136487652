#!/usr/bin/env bash
# Measures the cluster with its sites 25 ms apart (issue 17): three nodes with `--timing wan`
# on loopback, then again with every node's Raft traffic through a user-space WAN link (delay,
# jitter, loss as TCP resends it; `tc netem` is not needed), and prints a change set's latency
# against the one-round-trip floor, the read-modify-write matrix against loopback's, and leader
# SIGKILL to first acknowledged write. About five minutes; no root needed.
#
#   scripts/bench-wan.sh [--delay-ms 25] [--jitter-ms 2] [--loss-permille 1] [--seconds 10]
#                        [--clients 1,16,64,256] [--trials 7] [other `sonraft bench wan` flags]
#
# Builds the release binary (CARGO_TARGET_DIR is honoured). See DESIGN.md, "Across a WAN".
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case "${1:-}" in
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
esac
(cd "$ROOT" && cargo build --release --bin sonraft)
exec "${CARGO_TARGET_DIR:-$ROOT/target}/release/sonraft" bench wan "$@"
