#!/usr/bin/env bash
# sonraft side by side with etcd, on this machine: a three-member etcd and a three-node sonraft
# on loopback, data directories side by side on the same disk, the same closed-loop workload
# against both (read a random cell's version, then a write conditional on it — etcd: Get for
# the key's mod_revision, then a Txn comparing it and Put), at 1, 16, 64 and 256 clients.
# Prints both tables and the ratio per row, then stops exactly the processes it started.
#
#   scripts/bench-vs-etcd.sh [seconds per row (default 10)] [mode: rmw|write (default rmw)]
#
# Environment: BENCH_DIR (default ./run/bench-vs-etcd), BENCH_CLIENTS (default 1,16,64,256),
# BENCH_CELLS (default 10000). Installs Debian's etcd-server and protobuf-compiler if missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECONDS_PER_ROW=${1:-10}
MODE=${2:-rmw}
DIR=${BENCH_DIR:-$ROOT/run/bench-vs-etcd}
CLIENTS=${BENCH_CLIENTS:-1,16,64,256}
CELLS=${BENCH_CELLS:-10000}
BIN=$ROOT/target/release/sonraft
PIDS=()

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

cleanup() {
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

install_missing() {
    local need=()
    command -v etcd > /dev/null || need+=(etcd-server)
    command -v protoc > /dev/null || need+=(protobuf-compiler)
    [[ ${#need[@]} -eq 0 ]] && return
    log "installing ${need[*]}"
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo=sudo
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # policy-rc.d keeps the package from starting an etcd of its own on 2379/2380.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d > /dev/null
        $sudo chmod +x /usr/sbin/policy-rc.d
        local added_policy=1
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" > /dev/null
    [[ -n "${added_policy:-}" ]] && $sudo rm -f /usr/sbin/policy-rc.d
    command -v etcd > /dev/null || die "etcd is still missing after installing etcd-server"
}

# A free loopback port (random high ports until one does not answer).
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 30000))
        if ! (: < "/dev/tcp/127.0.0.1/$p") 2> /dev/null && [[ " ${USED_PORTS:-} " != *" $p "* ]]; then
            USED_PORTS="${USED_PORTS:-} $p"
            echo "$p"
            return
        fi
    done
}

start_etcd() {
    local cports=() pports=() cluster=""
    for i in 1 2 3; do
        cports+=("$(free_port)")
        pports+=("$(free_port)")
        cluster+="${cluster:+,}e$i=http://127.0.0.1:${pports[$i-1]}"
    done
    for i in 1 2 3; do
        etcd --name "e$i" --data-dir "$DIR/etcd/e$i" \
            --listen-client-urls "http://127.0.0.1:${cports[$i-1]}" --advertise-client-urls "http://127.0.0.1:${cports[$i-1]}" \
            --listen-peer-urls "http://127.0.0.1:${pports[$i-1]}" --initial-advertise-peer-urls "http://127.0.0.1:${pports[$i-1]}" \
            --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token sonraft-bench \
            --log-level warn > "$DIR/etcd/e$i.log" 2>&1 &
        PIDS+=($!)
    done
    ETCD_ENDPOINTS=$(printf 'http://127.0.0.1:%s,' "${cports[@]}")
    ETCD_ENDPOINTS=${ETCD_ENDPOINTS%,}
    for _ in $(seq 1 200); do
        if ETCDCTL_API=3 etcdctl --endpoints="$ETCD_ENDPOINTS" endpoint health > /dev/null 2>&1 \
            || curl -sf "http://127.0.0.1:${cports[0]}/health" | grep -q true; then
            return
        fi
        sleep 0.1
    done
    die "etcd did not become healthy; see $DIR/etcd/*.log"
}

start_sonraft() {
    export SONRAFT_CLUSTER_SECRET=bench-cluster-secret-0123 SONRAFT_TOKEN=bench-operator-token
    local urls=()
    for i in 1 2 3; do
        "$BIN" node --id "$i" --site "site-$i" --data-dir "$DIR/sonraft/n$i" \
            --raft-addr 127.0.0.1:0 --api-addr 127.0.0.1:0 > "$DIR/sonraft/n$i.log" 2>&1 &
        PIDS+=($!)
        local pid=$!
        for _ in $(seq 1 200); do
            grep -qs "\"pid\":$pid" "$DIR/sonraft/n$i/addresses.json" && break
            sleep 0.05
        done
        urls+=("http://$(sed -n 's/.*"api_addr":"\([^"]*\)".*/\1/p' "$DIR/sonraft/n$i/addresses.json")")
    done
    export SONRAFT_NODES="${urls[*]}"
    "$BIN" ctl init > /dev/null
    for u in "${urls[@]}"; do
        for _ in $(seq 1 200); do curl -sf "$u/readyz" > /dev/null && break; sleep 0.05; done
    done
}

run_bench() { # target, output file
    local target=$1 out=$2
    local extra=()
    [[ $target == etcd ]] && extra=(--etcd "$ETCD_ENDPOINTS")
    "$BIN" bench load --target "$target" "${extra[@]}" --clients "$CLIENTS" --mode "$MODE" \
        --seconds "$SECONDS_PER_ROW" --cells "$CELLS" | tee "$out"
}

install_missing
log "building sonraft (release, with the etcd client)"
(cd "$ROOT" && cargo build --release --quiet --features etcd --bin sonraft)
rm -rf "$DIR"
mkdir -p "$DIR/etcd" "$DIR/sonraft"
log "data directories side by side in $DIR ($(df -h "$DIR" | awk 'NR==2 {print $1}'))"

log "starting a three-member etcd ($(etcd --version | head -1))"
start_etcd
log "etcd: $MODE at clients $CLIENTS, ${SECONDS_PER_ROW}s per row"
run_bench etcd "$DIR/etcd.txt"
cleanup
PIDS=()

log "starting a three-node sonraft"
start_sonraft
log "sonraft: $MODE at clients $CLIENTS, ${SECONDS_PER_ROW}s per row"
run_bench sonraft "$DIR/sonraft.txt"

echo
echo "sonraft / etcd, mode $MODE (throughput ratio > 1 and p99 ratio < 1 favour sonraft):"
printf '%8s %14s %14s %9s %12s %12s %9s\n' clients "etcd ops/s" "sonraft ops/s" ratio "etcd p99 ms" "sonraft p99" "p99 ratio"
grep '^{' "$DIR/etcd.txt" > "$DIR/etcd.json"
grep '^{' "$DIR/sonraft.txt" > "$DIR/sonraft.json"
paste -d'\n' "$DIR/etcd.json" "$DIR/sonraft.json" | while read -r e && read -r s; do
    field() { sed -n "s/.*\"$2\":\([0-9.]*\).*/\1/p" <<< "$1"; }
    awk -v c="$(field "$e" clients)" -v eo="$(field "$e" ops_per_s)" -v so="$(field "$s" ops_per_s)" \
        -v ep="$(field "$e" p99_ms)" -v sp="$(field "$s" p99_ms)" \
        'BEGIN { printf "%8d %14.0f %14.0f %9.2f %12.2f %12.2f %9.2f\n", c, eo, so, (eo > 0 ? so / eo : 0), ep, sp, (ep > 0 ? sp / ep : 0) }'
done
