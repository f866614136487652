#!/usr/bin/env bash
# Measures how long clients wait when the leader's site is cut off by a firewall that answers
# (issue 19): three nodes, each in its own network namespace (plain disk, default timing),
# read-modify-write clients on every node's admin API; each round cuts the leader's Raft port
# off from the others with TCP resets, both ways (its admin API stays reachable), times the
# election (until another node's /status says it leads) and every client request in flight at
# the cut or sent until the heal. Prints per round and in total the election time, the longest
# wait via a follower and at the cut-off leader and the ratio longest wait / election time;
# exits 1 if a round's longest wait exceeds twice its election time.
#
#   scripts/failover-bench.sh [--rounds N] [--seed S] [other `sonraft-campaign failover` flags]
#
# With --trace N the nodes log at debug level and each round prints its N slowest requests
# with what the node logs say about them: forward attempts, read proofs, role changes and
# forced elections, in time order relative to the cut.
#
# Needs root (namespaces, iptables), iproute2, iptables and libfaketime (the campaign's node
# harness preloads it). Builds the release binaries (CARGO_TARGET_DIR is honoured).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case "${1:-}" in
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
esac
(cd "$ROOT" && cargo build --release --workspace --bin sonraft --bin sonraft-campaign)
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
exec "$BIN/sonraft-campaign" failover --sonraft "$BIN/sonraft" "$@"
