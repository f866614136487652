#!/usr/bin/env bash
# Brings up a three-site sonraft cluster on this machine, with a simulated antenna fleet, or
# prints/performs the per-site steps for three real hosts.
#
#   scripts/bootstrap-cluster.sh            build if needed, start the antenna simulator and
#                                           site-a/b/c, init, import the simulated network;
#                                           safe to run again (restarts what is down)
#   scripts/bootstrap-cluster.sh stop       stop exactly the processes this script started
#   scripts/bootstrap-cluster.sh status     show the nodes
#   scripts/bootstrap-cluster.sh hosts H1 H2 H3 [--run]
#                                           write one install bundle per site (config from
#                                           deploy/sonraft.toml, the systemd unit, secrets as
#                                           mode-600 files) and print (or with --run, perform
#                                           over ssh) the steps to install them
#   --tls (with any of them)                TLS on the admin API and between the nodes: a
#                                           private CA and a certificate per node from
#                                           scripts/make-certs.sh in $SONRAFT_RUN_DIR/certs
#                                           (kept once made; a run directory made with --tls
#                                           stays TLS); ctl and curl get the CA (SONRAFT_CA,
#                                           --cacert) from cluster.env; in hosts mode each
#                                           bundle carries its node's certificate and key
#
# Environment: SONRAFT_RUN_DIR (default ./run), SONRAFT_BIN (default: release build of this
# checkout), SONRAFT_DEMO_CELLS (default 300), SONRAFT_SIM_PERIOD_MS (default 2000),
# SONRAFT_SIM_DAY_SECONDS (default 0: demand stays at the busy hour; e.g. 600 runs a daily
# profile, one simulated day in ten minutes, and energy saving puts capacity cells to sleep at
# night; the day then also has one planted outage, at a third of it, for 30 periods, unless
# SONRAFT_SIM_PLANT says otherwise: KIND:CELL@PERIOD[-CLEAR][,...], or "none"),
# SONRAFT_HEALTH_WAIT_S (hosts --run: how long the installed nodes have to answer /health
# before the script gives up without `ctl init`; default 20).
set -euo pipefail

args=()
TLS_ASKED=false
for a in "$@"; do
    if [[ "$a" == --tls ]]; then TLS_ASKED=true; else args+=("$a"); fi
done
set -- "${args[@]+"${args[@]}"}"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN_DIR=${SONRAFT_RUN_DIR:-./run}
mkdir -p "$RUN_DIR"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
BIN=${SONRAFT_BIN:-$ROOT/target/release/sonraft}
CELLS=${SONRAFT_DEMO_CELLS:-300}
PERIOD_MS=${SONRAFT_SIM_PERIOD_MS:-2000}
DAY_SECONDS=${SONRAFT_SIM_DAY_SECONDS:-0}
if (( DAY_SECONDS > 0 )); then
    third=$(( DAY_SECONDS * 1000 / PERIOD_MS / 3 ))
    PLANT=${SONRAFT_SIM_PLANT:-outage:S00002-2@$third-$(( third + 30 ))}
else
    PLANT=${SONRAFT_SIM_PLANT:-}
fi
[[ "$PLANT" == none ]] && PLANT=""
SITES=(site-a site-b site-c)
CERTS="$RUN_DIR/certs"
# A run directory made with --tls stays TLS: its nodes' data and clients expect it.
if $TLS_ASKED || [[ -f "$RUN_DIR/tls" ]]; then TLS=true; else TLS=false; fi
if $TLS; then
    touch "$RUN_DIR/tls"
    SCHEME=https
    CURL_TLS=(--cacert "$CERTS/ca.pem")
else
    SCHEME=http
    CURL_TLS=()
fi

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

build() {
    if [[ -z "${SONRAFT_BIN:-}" ]]; then
        log "building sonraft (release; quick when nothing changed)"
        (cd "$ROOT" && cargo build --release --quiet --bin sonraft)
    fi
    [[ -x "$BIN" ]] || die "no sonraft binary at $BIN"
}

secrets() {
    local f="$RUN_DIR/secrets.env"
    if [[ ! -f "$f" ]]; then
        umask 077
        printf 'SONRAFT_CLUSTER_SECRET=%s\nSONRAFT_TOKEN=%s\n' \
            "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
            "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$f"
    fi
    # shellcheck disable=SC1090
    source "$f"
    export SONRAFT_CLUSTER_SECRET SONRAFT_TOKEN
}

# The pid in a pid file, if that process is still the one we started (same binary and dir).
alive_pid() {
    local pidfile=$1 dir=$2 pid
    [[ -f "$pidfile" ]] || return 1
    pid=$(cat "$pidfile")
    [[ -n "$pid" && -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "$dir" || return 1
    echo "$pid"
}

json_field() { # file field
    sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\).*/\1/p" "$1"
}

api_of() { json_field "$RUN_DIR/$1/data/addresses.json" api_addr; }

# The CA and one certificate per site for this machine's loopback addresses.
make_local_certs() {
    $TLS || return 0
    local specs=() s
    for s in "${SITES[@]}"; do specs+=("$s=127.0.0.1,localhost"); done
    "$ROOT/scripts/make-certs.sh" "$CERTS" "${specs[@]}" | while read -r line; do log "certificates: $line"; done
}

# A node's TLS flags (none without --tls); $2: the directory the node reads them from.
tls_args() {
    $TLS || return 0
    local site=$1 dir=${2:-$CERTS}
    echo "--tls-cert $dir/$site.pem --tls-key $dir/$site.key --tls-ca $dir/ca.pem"
}

# The simulator plays every cell of the demo network; the nodes connect to it.
start_sim() {
    local dir="$RUN_DIR/sim" pid
    mkdir -p "$dir"
    if pid=$(alive_pid "$dir/sim.pid" "$dir"); then
        log "antenna simulator: already running (pid $pid)"
    else
        # Restart on the same port, so that running nodes find it again.
        local listen=127.0.0.1:0
        if [[ -f "$dir/addresses.json" ]]; then
            listen=$(sed -n 's/.*"antennas":\["\([^"]*\)".*/\1/p' "$dir/addresses.json")
        fi
        rm -f "$dir/addresses.json"
        log "antenna simulator: starting $CELLS cells, counters every $PERIOD_MS ms, a day every ${DAY_SECONDS} s (0: always the busy hour)"
        local plant=()
        if [[ -n "$PLANT" ]]; then
            local p
            for p in ${PLANT//,/ }; do plant+=(--plant "$p"); done
            log "antenna simulator: planting $PLANT (KIND:CELL@PERIOD-CLEAR)"
        fi
        nohup "$BIN" sim run --cells "$CELLS" --period-ms "$PERIOD_MS" --day-seconds "$DAY_SECONDS" "${plant[@]}" --listen "$listen" \
            --status-addr 127.0.0.1:0 --addresses-file "$dir/addresses.json" >> "$dir/sim.log" 2>&1 &
        echo $! > "$dir/sim.pid"
        for _ in $(seq 1 200); do [[ -f "$dir/addresses.json" ]] && break; sleep 0.05; done
        [[ -f "$dir/addresses.json" ]] || die "the simulator did not start; see $dir/sim.log"
    fi
    SIM_ANTENNAS=$(sed -n 's/.*"antennas":\["\([^"]*\)".*/\1/p' "$dir/addresses.json")
    SIM_STATUS=$(json_field "$dir/addresses.json" status)
}

start_node() {
    local i=$1 site=${SITES[$1-1]} dir="$RUN_DIR/${SITES[$1-1]}"
    mkdir -p "$dir"
    if pid=$(alive_pid "$dir/node.pid" "$dir/data"); then
        log "$site: already running (pid $pid)"
        return
    fi
    local raft=127.0.0.1:0 api=127.0.0.1:0
    if [[ -f "$dir/data/addresses.json" ]]; then
        raft=$(json_field "$dir/data/addresses.json" raft_addr)
        api=$(json_field "$dir/data/addresses.json" api_addr)
    fi
    rm -f "$dir/data/addresses.json.tmp"
    log "$site: starting node $i"
    nohup "$BIN" node --id "$i" --site "$site" --data-dir "$dir/data" \
        --raft-addr "$raft" --api-addr "$api" --timing loopback --antennas "$SIM_ANTENNAS" \
        $(tls_args "$site") ${SONRAFT_NODE_ARGS:-} >> "$dir/node.log" 2>&1 &
    local pid=$!
    echo "$pid" > "$dir/node.pid"
    for _ in $(seq 1 200); do
        if [[ -f "$dir/data/addresses.json" ]] && grep -q "\"pid\":$pid" "$dir/data/addresses.json"; then
            return
        fi
        kill -0 "$pid" 2>/dev/null || die "$site: the node exited; see $dir/node.log"
        sleep 0.05
    done
    die "$site: the node did not start within 10 s; see $dir/node.log"
}

# The token goes to curl through a file descriptor (printf is a shell builtin): on curl's
# command line every user of the machine could read it.
curl_api() { curl -sS --max-time 10 "${CURL_TLS[@]+"${CURL_TLS[@]}"}" -H @<(printf 'Authorization: Bearer %s\n' "$SONRAFT_TOKEN") "$@"; }

wait_ready() {
    for s in "${SITES[@]}"; do
        local api; api=$(api_of "$s")
        for _ in $(seq 1 600); do
            if curl -sf --max-time 2 "${CURL_TLS[@]+"${CURL_TLS[@]}"}" "$SCHEME://$api/readyz" > /dev/null; then continue 2; fi
            sleep 0.05
        done
        die "$s is not ready after 30 s: $(curl -s "${CURL_TLS[@]+"${CURL_TLS[@]}"}" "$SCHEME://$api/readyz")"
    done
}

write_env() {
    local urls=()
    for s in "${SITES[@]}"; do urls+=("$SCHEME://$(api_of "$s")"); done
    cat > "$RUN_DIR/cluster.env" <<ENV
# sonraft three-site cluster on this machine (written by scripts/bootstrap-cluster.sh)
export SONRAFT_NODES="${urls[*]}"
export SONRAFT_TOKEN="$SONRAFT_TOKEN"
export PATH="$(dirname "$BIN"):\$PATH"
ENV
    if $TLS; then
        echo "export SONRAFT_CA=\"$CERTS/ca.pem\"   # ctl trusts it; curl --cacert \$SONRAFT_CA" >> "$RUN_DIR/cluster.env"
    fi
    chmod 600 "$RUN_DIR/cluster.env"
}

up() {
    build
    secrets
    make_local_certs
    start_sim
    for i in 1 2 3; do start_node "$i"; done
    write_env
    # shellcheck disable=SC1091
    source "$RUN_DIR/cluster.env"
    local a; a=$(api_of site-a)
    if curl_api "$SCHEME://$a/status" | grep -q '"voters":\[\]'; then
        log "initialising the cluster (site-a, site-b, site-c as voters)"
        "$BIN" ctl init > /dev/null
    else
        log "cluster already initialised"
    fi
    wait_ready
    if [[ "$(curl_api "$SCHEME://$a/image/cells?limit=1")" == "[]" ]]; then
        log "importing the simulated network of $CELLS cells"
        # Short cool-downs to match the demo's short counter periods.
        "$BIN" sim export --cells "$CELLS" --cooldown-ms $((PERIOD_MS * 3)) > "$RUN_DIR/demo-image.json"
        "$BIN" ctl import "$RUN_DIR/demo-image.json" > /dev/null
        # Likewise ANR's idle window: a minute of the demo's traffic, not a week of a live
        # network's. Until every node has advertised its release the cluster refuses it
        # (409 cluster_version): try for a few seconds.
        echo '{"anr": {"idle_prune_ms": 60000}}' > "$RUN_DIR/demo-tuning.json"
        local tries=0
        until "$BIN" ctl son-tuning --set "$RUN_DIR/demo-tuning.json" > /dev/null 2>&1; do
            tries=$((tries + 1))
            [[ $tries -lt 50 ]] || die "the SON tuning was not accepted: $("$BIN" ctl son-tuning --set "$RUN_DIR/demo-tuning.json" 2>&1)"
            sleep 0.2
        done
    fi
    summary
}

summary() {
    echo
    echo "sonraft cluster is up (run directory $RUN_DIR):"
    echo "  antennas: $CELLS simulated cells at $SIM_ANTENNAS (network state: curl -s http://$SIM_STATUS/state)"
    for s in "${SITES[@]}"; do
        printf '  %-7s api %s://%-21s raft %-21s log %s\n' "$s" "$SCHEME" "$(api_of "$s")" \
            "$(json_field "$RUN_DIR/$s/data/addresses.json" raft_addr)" "$RUN_DIR/$s/node.log"
    done
    echo "  web view: $SCHEME://$(api_of site-a)/ui (any node; it asks for the token: SONRAFT_TOKEN in $RUN_DIR/cluster.env)"
    local cacert=""
    if $TLS; then
        cacert="--cacert \$SONRAFT_CA "
        cat <<TXT

TLS: the admin API is HTTPS only and the nodes talk over TLS, all certificates signed by the
private CA $CERTS/ca.pem (its key ca.key stays here, mode 0600). Point ctl at the nodes with
  sonraft ctl --ca $CERTS/ca.pem --nodes $SCHEME://$(api_of site-a),...
or source cluster.env (it sets SONRAFT_CA); curl needs --cacert $CERTS/ca.pem.
TXT
    fi
    cat <<TXT

Use it:
  source $RUN_DIR/cluster.env
  sonraft ctl status
  sonraft ctl cells --site S00001
  sonraft ctl propose --set cell/S00001-1:electrical_tilt=45 --reason "tilt down"
  sonraft ctl history              # the SON functions at work: PCI, load balancing, robustness, ANR, energy saving
  curl -s ${cacert}-H "Authorization: Bearer \$SONRAFT_TOKEN" \$(echo \$SONRAFT_NODES | cut -d' ' -f1)/antennas?limit=3
  curl -s ${cacert}\$(echo \$SONRAFT_NODES | cut -d' ' -f1)/metrics | grep -E 'sonraft_(son|antenna)'
  curl -s http://$SIM_STATUS/state | head -c 600
  curl -s -X POST http://$SIM_STATUS/fault -d '{"cell": "S00000-1", "fault": "outage"}'   # or sleeping, hole, hotspot, clear
Stop it:
  scripts/bootstrap-cluster.sh stop
TXT
}

stop() {
    local stopped=0 pid
    for s in "${SITES[@]}"; do
        local dir="$RUN_DIR/$s" pid
        if pid=$(alive_pid "$dir/node.pid" "$dir/data"); then
            log "$s: stopping node (pid $pid)"
            kill -TERM "$pid"
            # A stopped node may linger as a zombie until its parent reaps it: alive_pid checks
            # the command line, which a zombie no longer has.
            for _ in $(seq 1 300); do alive_pid "$dir/node.pid" "$dir/data" > /dev/null || break; sleep 0.02; done
            if alive_pid "$dir/node.pid" "$dir/data" > /dev/null; then log "$s: still running after 6 s; SIGKILL"; kill -KILL "$pid"; fi
            stopped=$((stopped + 1))
        fi
        rm -f "$dir/node.pid"
    done
    if pid=$(alive_pid "$RUN_DIR/sim/sim.pid" "$RUN_DIR/sim"); then
        log "antenna simulator: stopping (pid $pid)"
        kill -TERM "$pid"
        stopped=$((stopped + 1))
    fi
    rm -f "$RUN_DIR/sim/sim.pid"
    log "stopped $stopped process(es)"
}

status() {
    secrets
    write_env
    # shellcheck disable=SC1091
    source "$RUN_DIR/cluster.env"
    "$BIN" ctl status
}

# One bundle per site under $RUN_DIR/hosts/SITE: the binary, the site's config (from
# deploy/sonraft.toml), the systemd unit, the secrets (mode 600) and deploy/install.sh.
bundles() {
    local h=("$@") out="$RUN_DIR/hosts"
    umask 077
    mkdir -p "$out"
    if $TLS; then
        "$ROOT/scripts/make-certs.sh" "$CERTS" "site-a=${h[0]}" "site-b=${h[1]}" "site-c=${h[2]}" >&2
    fi
    [[ -f "$out/tokens" ]] || printf '# ROLE TOKEN, one a line: read-only, operator or admin (README, "Tokens and roles")\n' > "$out/tokens"
    printf '%s\n' "$SONRAFT_TOKEN" > "$out/token"
    for i in 1 2 3; do
        local host=${h[$i-1]} site=${SITES[$i-1]} dir="$out/${SITES[$i-1]}"
        mkdir -p "$dir"
        sed -e "s/@ID@/$i/" -e "s/@SITE@/$site/" -e "s/@HOST@/$host/g" \
            "$ROOT/deploy/sonraft.toml" > "$dir/sonraft.toml"
        cp "$ROOT/deploy/systemd/sonraft.service" "$ROOT/deploy/install.sh" "$dir/"
        cp "$BIN" "$dir/sonraft"
        printf '%s\n' "$SONRAFT_CLUSTER_SECRET" > "$dir/cluster-secret"
        cp "$out/token" "$out/tokens" "$dir/"
        if $TLS; then
            # The node's certificate and key, and the CA it trusts peers by (never ca.key).
            mkdir -p "$dir/tls"
            cp "$CERTS/$site.pem" "$dir/tls/node.pem"
            cp "$CERTS/$site.key" "$dir/tls/node.key"
            cp "$CERTS/ca.pem" "$dir/tls/ca.pem"
            chmod 644 "$dir/tls/node.pem" "$dir/tls/ca.pem"
            chmod 600 "$dir/tls/node.key"
            printf '%s\n' '# TLS (bootstrap --tls): this node'"'"'s certificate and key, and the cluster'"'"'s CA.' \
                'tls_cert = "/etc/sonraft/tls/node.pem"' 'tls_key = "/etc/sonraft/tls/node.key"' \
                'tls_ca = "/etc/sonraft/tls/ca.pem"' >> "$dir/sonraft.toml"
        fi
        chmod 600 "$dir/token" "$dir/cluster-secret" "$dir/tokens"
        chmod 644 "$dir/sonraft.toml" "$dir/sonraft.service"
        chmod 755 "$dir/sonraft" "$dir/install.sh"
    done
}

# Waits until the node on each of the hosts answers /health, for $SONRAFT_HEALTH_WAIT_S seconds
# (default 20) in all; dies naming every node that did not, and where its log is, so that a
# node that failed to start is not reported as `ctl init`'s error about an unreachable peer.
wait_healthy() {
    local h=("$@") waiting=(1 2 3) i left
    local deadline=$(( SECONDS + ${SONRAFT_HEALTH_WAIT_S:-20} ))
    while :; do
        left=()
        for i in "${waiting[@]}"; do
            curl -sf --max-time 2 "${CURL_TLS[@]+"${CURL_TLS[@]}"}" "$SCHEME://${h[$i-1]}:8001/health" > /dev/null \
                || left+=("$i")
        done
        waiting=("${left[@]+"${left[@]}"}")
        (( ${#waiting[@]} > 0 )) || return 0
        (( SECONDS < deadline )) || break
        sleep 0.2
    done
    for i in "${waiting[@]}"; do
        log "error: ${SITES[$i-1]} (node $i) on ${h[$i-1]} did not answer $SCHEME://${h[$i-1]}:8001/health within ${SONRAFT_HEALTH_WAIT_S:-20} s; its log: ssh ${h[$i-1]} journalctl -u sonraft (unit sonraft.service)"
    done
    die "${#waiting[@]} node(s) not up; the cluster was not initialised"
}

hosts() {
    [[ $# -ge 3 ]] || die "usage: $0 hosts HOST1 HOST2 HOST3 [--run]"
    local h=("$1" "$2" "$3") run=${4:-} out="$RUN_DIR/hosts"
    [[ -z "$run" || "$run" == --run ]] || die "unknown option $run (--run)"
    secrets
    bundles "${h[@]}"
    local nodes="$SCHEME://${h[0]}:8001 $SCHEME://${h[1]}:8001 $SCHEME://${h[2]}:8001" ctl_ca=()
    $TLS && ctl_ca=(--ca "$CERTS/ca.pem")
    echo "# sonraft on three hosts: one bundle per site under $out (config, unit, secrets$($TLS && echo ', TLS certificate and key'))."
    echo "# No secret is on any command line: they travel as files and reach the node as"
    echo "# systemd credentials. Per host (root over ssh, or sudo):"
    # Into a fresh private directory (mktemp -d): a fixed /tmp path could be planted by another
    # user of the host, and sudo would run their install.sh. Removed whatever the outcome.
    for i in 1 2 3; do
        echo "d=\$(ssh ${h[$i-1]} mktemp -d) && scp -rpq $out/${SITES[$i-1]}/. ${h[$i-1]}:\$d/ && ssh ${h[$i-1]} \"sudo sh \$d/install.sh; rm -rf \$d\""
    done
    echo "# then, from anywhere (more tokens with roles: edit $out/tokens and install again):"
    echo "SONRAFT_NODES=\"$nodes\" SONRAFT_TOKEN_FILE=$out/token sonraft ctl ${ctl_ca[*]} init"
    $TLS && echo "# the CA's key $CERTS/ca.key stays here; clients trust $CERTS/ca.pem (curl: --cacert)"
    echo "# upgrades, one site at a time: scripts/rolling-upgrade.sh NEW_BINARY --hosts site-a=${h[0]},site-b=${h[1]},site-c=${h[2]}"
    if [[ "$run" == "--run" ]]; then
        for i in 1 2 3; do
            log "installing ${SITES[$i-1]} on ${h[$i-1]} over ssh"
            local d
            d=$(ssh "${h[$i-1]}" mktemp -d)
            [[ "$d" == /* ]] || die "mktemp -d on ${h[$i-1]} gave no directory"
            scp -rpq "$out/${SITES[$i-1]}/." "${h[$i-1]}:$d/"
            ssh "${h[$i-1]}" "sudo sh $d/install.sh; status=\$?; rm -rf $d; exit \$status"
        done
        wait_healthy "${h[@]}"
        SONRAFT_NODES="$nodes" SONRAFT_TOKEN_FILE="$out/token" SONRAFT_TOKEN="" "$BIN" ctl "${ctl_ca[@]+"${ctl_ca[@]}"}" init
    fi
}

case "${1:-up}" in
    up|start) up ;;
    stop) stop ;;
    status) status ;;
    hosts) shift; hosts "$@" ;;
    -h|--help|help) sed -n '2,30p' "$0" ;;
    *) die "unknown command $1 (up, stop, status, hosts)" ;;
esac
