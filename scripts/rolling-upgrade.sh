#!/usr/bin/env bash
# Upgrades a sonraft cluster one site at a time while it keeps serving.
#
#   scripts/rolling-upgrade.sh NEW_BINARY [--sites site-a,site-b,site-c] [--force]
#       the local three-site cluster of scripts/bootstrap-cluster.sh (SONRAFT_RUN_DIR,
#       default ./run)
#   scripts/rolling-upgrade.sh NEW_BINARY --hosts site-a=HOST1,site-b=HOST2,site-c=HOST3
#       real hosts, over ssh (see "Real hosts" below)
#
# For each site in turn it
#   1. checks that the cluster is healthy (every voter answers and is ready, one agreed
#      leader, nobody trailing): `sonraft ctl health`;
#   2. takes a backup of the image (`sonraft ctl backup`, into the backup directory);
#   3. moves leadership away if this site leads (`sonraft ctl leader --away-from ID`);
#   4. stops the node gracefully (SIGTERM: it finishes what it is doing and exits);
#   5. keeps a copy of the stopped node's data directory (local mode; SONRAFT_UPGRADE_COPY_DATA=0
#      skips it) and of the binary it ran, then installs the new binary;
#   6. starts the node with the arguments it had, and waits until it is ready, follows the
#      leader and applied everything committed before it came back (`ctl wait-caught-up`);
#   7. checks that it reports the new release and that the cluster is healthy again.
# It stops at the first step that fails, says which and why, and leaves the remaining sites
# untouched. At the end (or at the failure) it prints one summary line per site. Sites already
# on the new release are skipped unless --force.
#
# The new binary's `ctl` drives the upgrade: it speaks admin API v1, which every release
# serves. The cluster's effective command format rises only once every voter runs the new
# release, so a half-upgraded cluster keeps working (see README, "Upgrades").
#
# Real hosts: each site runs `sonraft node` as the systemd unit `sonraft` that
# deploy/install.sh installs (deploy/systemd/sonraft.service; binary /usr/local/bin/sonraft,
# admin API on port $SONRAFT_API_PORT, default 8001). Set SONRAFT_TOKEN or SONRAFT_TOKEN_FILE
# (an admin token: `bootstrap-cluster.sh hosts` wrote it to run/hosts/token), and override the
# per-site commands if your hosts differ ({host}, {binary} are replaced):
#   SONRAFT_UPGRADE_STOP='ssh {host} sudo systemctl stop sonraft'
#   SONRAFT_UPGRADE_INSTALL='scp {binary} {host}:/tmp/sonraft.new && ssh {host} sudo install -b -m 755 /tmp/sonraft.new /usr/local/bin/sonraft'
#   SONRAFT_UPGRADE_START='ssh {host} sudo systemctl start sonraft'
# The stop command must return once the process exited (systemctl stop does; the unit's
# KillSignal must stay SIGTERM and TimeoutStopSec above 30 s).
#
# Environment: SONRAFT_RUN_DIR (./run), SONRAFT_BACKUP_DIR ($SONRAFT_RUN_DIR/backups),
# SONRAFT_UPGRADE_TIMEOUT (seconds per wait, 120), SONRAFT_UPGRADE_EVENTS (a file to append
# "site phase epoch_ms" lines to, for tests), SONRAFT_UPGRADE_COPY_DATA (1), SONRAFT_CA (the
# CA of a cluster over TLS: the API is then reached over https; a local cluster bootstrapped
# with --tls needs nothing, its CA is in the run directory).
set -euo pipefail

log() { printf '%s %s\n' "$(date +%H:%M:%S.%3N)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
now_ms() { date +%s%3N; }

[[ $# -ge 1 && "$1" != -h && "$1" != --help ]] || { sed -n '2,44p' "$0"; exit 2; }
NEW=$1; shift
[[ -x "$NEW" ]] || die "$NEW is not an executable"
NEW=$(cd "$(dirname "$NEW")" && pwd)/$(basename "$NEW")
NEW_VERSION=$("$NEW" --version 2>/dev/null | awk '{print $2}') || true
[[ -n "$NEW_VERSION" ]] || die "$NEW --version does not print a release; is it a sonraft binary?"

SITES_ARG="" HOSTS_ARG="" FORCE=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --sites) SITES_ARG=$2; shift 2 ;;
        --hosts) HOSTS_ARG=$2; shift 2 ;;
        --force) FORCE=1; shift ;;
        *) die "unknown argument $1" ;;
    esac
done

RUN_DIR=${SONRAFT_RUN_DIR:-./run}
TIMEOUT=${SONRAFT_UPGRADE_TIMEOUT:-120}
EVENTS=${SONRAFT_UPGRADE_EVENTS:-}
COPY_DATA=${SONRAFT_UPGRADE_COPY_DATA:-1}
API_PORT=${SONRAFT_API_PORT:-8001}
if [[ -z "${SONRAFT_CA:-}" && -z "$HOSTS_ARG" && -f "$RUN_DIR/tls" ]]; then
    SONRAFT_CA="$(cd "$RUN_DIR" && pwd)/certs/ca.pem"
fi
if [[ -n "${SONRAFT_CA:-}" ]]; then
    export SONRAFT_CA
    SCHEME=https
    CURL_TLS=(--cacert "$SONRAFT_CA")
else
    SCHEME=http
    CURL_TLS=()
fi
declare -A HOST_OF=()
SITES=()

event() { [[ -z "$EVENTS" ]] || echo "$1 $2 $(now_ms)" >> "$EVENTS"; }

json_field() { # file field
    sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\).*/\1/p" "$1"
}

if [[ -n "$HOSTS_ARG" ]]; then
    MODE=remote
    IFS=',' read -r -a pairs <<< "$HOSTS_ARG"
    urls=()
    for p in "${pairs[@]}"; do
        [[ "$p" == *=* ]] || die "--hosts takes site=host pairs, got $p"
        SITES+=("${p%%=*}")
        HOST_OF[${p%%=*}]=${p#*=}
        urls+=("$SCHEME://${p#*=}:$API_PORT")
    done
    export SONRAFT_NODES="${SONRAFT_NODES:-${urls[*]}}"
    [[ -n "${SONRAFT_TOKEN:-}" || -n "${SONRAFT_TOKEN_FILE:-}" ]] \
        || die "set SONRAFT_TOKEN or SONRAFT_TOKEN_FILE (an admin token)"
    STOP_CMD=${SONRAFT_UPGRADE_STOP:-'ssh {host} sudo systemctl stop sonraft'}
    INSTALL_CMD=${SONRAFT_UPGRADE_INSTALL:-'scp {binary} {host}:/tmp/sonraft.new && ssh {host} sudo install -b -m 755 /tmp/sonraft.new /usr/local/bin/sonraft'}
    START_CMD=${SONRAFT_UPGRADE_START:-'ssh {host} sudo systemctl start sonraft'}
else
    MODE=local
    [[ -d "$RUN_DIR" ]] || die "no run directory $RUN_DIR (start the cluster with scripts/bootstrap-cluster.sh, or set SONRAFT_RUN_DIR)"
    RUN_DIR=$(cd "$RUN_DIR" && pwd)
    [[ -f "$RUN_DIR/secrets.env" ]] || die "no $RUN_DIR/secrets.env: not a bootstrap run directory"
    # shellcheck disable=SC1091
    source "$RUN_DIR/secrets.env"
    export SONRAFT_CLUSTER_SECRET SONRAFT_TOKEN
    if [[ -n "$SITES_ARG" ]]; then
        IFS=',' read -r -a SITES <<< "$SITES_ARG"
    else
        for d in "$RUN_DIR"/*/data/addresses.json; do
            [[ -f "$d" ]] || continue
            s=$(basename "$(dirname "$(dirname "$d")")")
            SITES+=("$s")
        done
    fi
    urls=()
    for s in "${SITES[@]}"; do
        f="$RUN_DIR/$s/data/addresses.json"
        [[ -f "$f" ]] || die "$s: no $f"
        urls+=("$SCHEME://$(json_field "$f" api_addr)")
    done
    export SONRAFT_NODES="${urls[*]}"
fi
[[ ${#SITES[@]} -gt 0 ]] || die "no sites found"
BACKUP_DIR=${SONRAFT_BACKUP_DIR:-$RUN_DIR/backups}
mkdir -p "$BACKUP_DIR"

ctl() { "$NEW" ctl --timeout 30 "$@"; }

api_of() {
    if [[ $MODE == remote ]]; then
        echo "${HOST_OF[$1]}:$API_PORT"
    else
        json_field "$RUN_DIR/$1/data/addresses.json" api_addr
    fi
}

# node-info as shell variables NODE_<FIELD> (values are restricted to [A-Za-z0-9._:-]).
node_info() {
    local out line
    out=$(ctl node-info "$1") || return 1
    NODE_id="" NODE_role="" NODE_version="" NODE_site=""
    while IFS= read -r line; do
        case "${line%%=*}" in
            id) NODE_id=${line#*=} ;;
            role) NODE_role=${line#*=} ;;
            version) NODE_version=${line#*=} ;;
            site) NODE_site=${line#*=} ;;
        esac
    done <<< "$out"
}

# The pid of the local node of site $1, if it is still the process we expect.
local_pid() {
    local dir="$RUN_DIR/$1" pid
    [[ -f "$dir/node.pid" ]] || return 1
    pid=$(cat "$dir/node.pid")
    [[ -n "$pid" && -r /proc/$pid/cmdline ]] || return 1
    tr '\0' '\n' < "/proc/$pid/cmdline" | grep -qx -- "$dir/data" || return 1
    echo "$pid"
}

fill() { # template: replaces {host} and {binary}
    local t=$1
    t=${t//\{host\}/$2}
    t=${t//\{binary\}/$NEW}
    printf '%s' "$t"
}

stop_node() { # site
    local site=$1
    if [[ $MODE == remote ]]; then
        bash -c "$(fill "$STOP_CMD" "${HOST_OF[$site]}")" || return 1
        for _ in $(seq 1 100); do
            curl -sf --max-time 1 "${CURL_TLS[@]+"${CURL_TLS[@]}"}" "$SCHEME://$(api_of "$site")/health" > /dev/null || return 0
            sleep 0.1
        done
        log "$site: the API still answers after the stop command"
        return 1
    fi
    local dir="$RUN_DIR/$site" pid
    pid=$(local_pid "$site") || { log "$site: no running node found (node.pid)"; return 1; }
    # The arguments it runs with, to start the new binary the same way.
    tr '\0' '\n' < "/proc/$pid/cmdline" > "$dir/node.cmdline"
    cp "/proc/$pid/exe" "$dir/sonraft.previous" 2>/dev/null || true
    kill -TERM "$pid"
    for _ in $(seq 1 $((TIMEOUT * 20))); do
        local_pid "$site" > /dev/null || return 0
        sleep 0.05
    done
    log "$site: node $pid still runs ${TIMEOUT} s after SIGTERM; not forcing it (look at $dir/node.log)"
    return 1
}

start_node() { # site
    local site=$1
    if [[ $MODE == remote ]]; then
        bash -c "$(fill "$INSTALL_CMD" "${HOST_OF[$site]}")" || { log "$site: install failed"; return 1; }
        bash -c "$(fill "$START_CMD" "${HOST_OF[$site]}")" || { log "$site: start failed"; return 1; }
        return 0
    fi
    local dir="$RUN_DIR/$site" args=() line prev="" raft api
    mkdir -p "$dir/bin"
    install -m 755 "$NEW" "$dir/bin/sonraft.new" && mv -f "$dir/bin/sonraft.new" "$dir/bin/sonraft"
    # Same arguments, but the bound addresses (a first start may have asked for port 0).
    raft=$(json_field "$dir/data/addresses.json" raft_addr)
    api=$(json_field "$dir/data/addresses.json" api_addr)
    local first=1
    while IFS= read -r line; do
        if [[ $first == 1 ]]; then first=0; continue; fi
        case "$prev" in
            --raft-addr) line=$raft ;;
            --api-addr) line=$api ;;
        esac
        args+=("$line")
        prev=$line
    done < "$dir/node.cmdline"
    rm -f "$dir/data/addresses.json.tmp"
    nohup "$dir/bin/sonraft" "${args[@]}" >> "$dir/node.log" 2>&1 &
    local pid=$!
    echo "$pid" > "$dir/node.pid"
    for _ in $(seq 1 $((TIMEOUT * 20))); do
        if grep -q "\"pid\":$pid" "$dir/data/addresses.json" 2> /dev/null; then return 0; fi
        kill -0 "$pid" 2> /dev/null || { log "$site: the new node exited; tail of $dir/node.log:"; tail -5 "$dir/node.log" >&2; return 1; }
        sleep 0.05
    done
    log "$site: the new node did not start listening within $TIMEOUT s"
    return 1
}

SUMMARY=()
summary() {
    echo
    echo "rolling upgrade to $NEW_VERSION ($MODE):"
    printf '  %-8s %-4s %-7s %-9s %-9s %9s  %s\n' site id leader from to "down(s)" result
    local row
    for row in "${SUMMARY[@]}"; do echo "  $row"; done
}
trap summary EXIT

row() { # site id leader from to down result
    SUMMARY+=("$(printf '%-8s %-4s %-7s %-9s %-9s %9s  %s' "$@")")
}

for site in "${SITES[@]}"; do
    api=$(api_of "$site")
    step() { log "$site: $*"; }
    fail() { row "$site" "${id:--}" "${was_leader:--}" "${from:--}" "$NEW_VERSION" "${down:--}" "FAILED: $*"; die "$site: $*"; }
    id="" was_leader="" from="" down=""
    event "$site" begin

    step "checking cluster health"
    health=$(ctl health 2>&1) || fail "the cluster is not healthy; not touching $site ($(tail -1 <<< "$health"))"
    node_info "$api" || fail "cannot read the node's status at $api"
    id=$NODE_id from=$NODE_version
    [[ "$NODE_site" == "$site" ]] || fail "the node at $api serves site $NODE_site, not $site"
    if [[ "$from" == "$NEW_VERSION" && $FORCE == 0 ]]; then
        step "already runs $NEW_VERSION; skipped"
        row "$site" "$id" - "$from" "$NEW_VERSION" - "skipped (already there)"
        event "$site" end
        continue
    fi

    backup="$BACKUP_DIR/$site-$(date +%Y%m%dT%H%M%S)-before-$NEW_VERSION.backup"
    step "backing up the image to $backup"
    ctl backup "$backup" > /dev/null || fail "backup failed"

    was_leader=no
    if [[ "$NODE_role" == leader ]]; then
        was_leader=yes
        step "node $id leads; handing leadership over"
        ctl leader --away-from "$id" >&2 || fail "could not move leadership away"
    fi

    step "stopping node $id ($from)"
    event "$site" stop
    t_stop=$(now_ms)
    stop_node "$site" || fail "graceful stop failed"
    if [[ $MODE == local && $COPY_DATA == 1 ]]; then
        copy="$BACKUP_DIR/$site-data-before-$NEW_VERSION"
        rm -rf "$copy" && cp -a "$RUN_DIR/$site/data" "$copy" || fail "cannot copy the data directory"
        step "data directory copied to $copy"
    fi

    step "starting node $id on $NEW_VERSION"
    start_node "$site" || fail "the new binary did not start"
    ctl wait-caught-up "$id" --within "$TIMEOUT" >&2 || fail "node $id did not catch up"
    down=$(awk -v a="$t_stop" -v b="$(now_ms)" 'BEGIN { printf "%.2f", (b - a) / 1000 }')
    event "$site" ready
    node_info "$api" || fail "cannot read the node's status after the restart"
    [[ "$NODE_version" == "$NEW_VERSION" ]] || fail "node $id reports release $NODE_version, not $NEW_VERSION"
    health=$(ctl health 2>&1) || fail "the cluster is not healthy after upgrading $site ($(tail -1 <<< "$health"))"
    row "$site" "$id" "$was_leader" "$from" "$NEW_VERSION" "$down" ok
    event "$site" end
    step "done"
done
