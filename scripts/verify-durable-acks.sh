#!/usr/bin/env bash
# Checks that no change set is acknowledged before its log entry is on disk on the leader and on
# a follower. Brings up the three-site cluster of scripts/bootstrap-cluster.sh (in its own run
# directory), runs one closed-loop read-modify-write client against it, traces the leader and one
# follower with strace (fdatasync, socket reads and writes, with times and durations), and checks
# in the trace that
#
#   - every change set the leader answered as applied was answered only after an fdatasync of
#     the leader's store that began after the request arrived and ended before the answer;
#   - every AppendEntries carrying entries that the follower answered was answered only after an
#     fdatasync of the follower's store that began after the request arrived.
#
# (The leader reports its own appends to openraft before it syncs them and replicates in the
# meantime; raft/src/durable.rs explains why that is safe. This script checks the result from
# outside the process.)
#
#   scripts/verify-durable-acks.sh [seconds traced (default 3)]
#
# Environment: SONRAFT_RUN_DIR (default ./run/verify-durable), SONRAFT_BIN. Installs strace if
# missing. Exits 0 when every acknowledgement in the trace was preceded by such a sync, 1 if not.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECONDS_TRACED=${1:-3}
export SONRAFT_RUN_DIR=${SONRAFT_RUN_DIR:-$ROOT/run/verify-durable}
BIN=${SONRAFT_BIN:-$ROOT/target/release/sonraft}

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if ! command -v strace > /dev/null; then
    log "installing strace"
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo=sudo
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq strace > /dev/null
fi

LOAD_PID=""
cleanup() {
    [[ -n "$LOAD_PID" ]] && kill "$LOAD_PID" 2> /dev/null || true
    "$ROOT/scripts/bootstrap-cluster.sh" stop > /dev/null 2>&1 || true
}
trap cleanup EXIT

"$ROOT/scripts/bootstrap-cluster.sh" > /dev/null
# shellcheck disable=SC1091
source "$SONRAFT_RUN_DIR/cluster.env"

field() { sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\).*/\1/p" "$SONRAFT_RUN_DIR/$1/data/addresses.json"; }
info() { "$BIN" ctl node-info "http://$(field "$1" api_addr)" | sed -n "s/^$2=//p"; }

# strace stops the traced node at every traced call; with the loopback election timeouts that
# can cost the leader its leadership, and a node that is no longer leader forwards change sets
# (their answers were synced elsewhere). An attempt counts only if the leader kept its term.
# --seccomp-bpf leaves untraced calls (epoll, futex...) unstopped.
SECCOMP=""
strace --seccomp-bpf -f -e trace=fdatasync true 2> /dev/null && SECCOMP=--seccomp-bpf
TRACE_DIR="$SONRAFT_RUN_DIR/trace"
mkdir -p "$TRACE_DIR"
for attempt in 1 2 3; do
    LEADER="" FOLLOWER=""
    for site in site-a site-b site-c; do
        role=$(info "$site" role)
        if [[ $role == leader ]]; then LEADER=$site; elif [[ -z $FOLLOWER ]]; then FOLLOWER=$site; fi
    done
    [[ -n $LEADER && -n $FOLLOWER ]] || { log "no leader found"; exit 1; }
    TERM_BEFORE=$(info "$LEADER" term)
    log "leader $LEADER (term $TERM_BEFORE), follower $FOLLOWER; one client for $((SECONDS_TRACED + 4)) s, traced for $SECONDS_TRACED s"
    "$BIN" bench load --clients 1 --seconds $((SECONDS_TRACED + 3)) --cells 2000 \
        > "$TRACE_DIR/load.txt" 2>&1 &
    LOAD_PID=$!
    sleep 2
    for role in leader follower; do
        site=$LEADER
        [[ $role == follower ]] && site=$FOLLOWER
        timeout "$SECONDS_TRACED" strace $SECCOMP -f -ttt -T -yy -s 48 \
            -e trace=fdatasync,writev,read,recvfrom \
            -p "$(field "$site" pid)" -o "$TRACE_DIR/$role.strace" 2> /dev/null &
    done
    wait "$LOAD_PID" || true
    LOAD_PID=""
    wait || true
    grep '^sonraft' "$TRACE_DIR/load.txt" >&2 || true
    if [[ $(info "$LEADER" role) == leader && $(info "$LEADER" term) == "$TERM_BEFORE" ]]; then
        break
    fi
    log "leadership moved during the trace (attempt $attempt); tracing again"
    [[ $attempt == 3 ]] && { log "the leader lost its term in every attempt"; exit 1; }
done

python3 - "$TRACE_DIR" "$(field "$LEADER" api_addr)" "$(field "$FOLLOWER" raft_addr)" <<'EOF'
import re, sys

trace_dir, leader_api, follower_raft = sys.argv[1:4]
LINE = re.compile(r'(\d+) +(\d+\.\d+) (.*?)(?: <(\d+\.\d+)>)?$')

def parse(path):
    """Syncs as (start, end), and socket reads/writes as (time, socket, call, text, result)."""
    syncs, io, started = [], [], {}
    for line in open(path):
        m = LINE.match(line.rstrip('\n'))
        if not m:
            continue
        tid, t, rest, dur = m.group(1), float(m.group(2)), m.group(3), m.group(4)
        if rest.startswith('fdatasync(') and '<unfinished' in rest:
            started[tid] = t
        elif rest.startswith('<... fdatasync resumed>'):
            if tid in started:
                syncs.append((started.pop(tid), t))
        elif rest.startswith('fdatasync('):
            syncs.append((t, t + float(dur or 0)))
        else:
            s = re.match(r'(read|recvfrom|writev)\(\d+<TCP:\[([^\]]+)\]>, (.*) = (\d+)', rest)
            if s:
                io.append((t, s.group(2), s.group(1), s.group(3), int(s.group(4))))
    return syncs, io

def check(name, path, port, is_request, is_answer):
    syncs, io = parse(path)
    pending, good, bad = {}, 0, 0
    for t, sock, call, text, n in io:
        if not sock.startswith(f'127.0.0.1:{port}->'):
            continue
        if call != 'writev' and is_request(text, n):
            pending[sock] = t
        elif call == 'writev' and sock in pending and is_answer(text):
            asked = pending.pop(sock)
            if any(asked < s and e < t for s, e in syncs):
                good += 1
            else:
                bad += 1
                print(f'  {name}: answer at {t:.6f} to a request at {asked:.6f} with no sync between')
    print(f'{name}: {good} acknowledgements after a sync that began after their request, {bad} without ({len(syncs)} fdatasyncs traced)')
    return good > 0 and bad == 0

api_port = leader_api.rsplit(':', 1)[1]
raft_port = follower_raft.rsplit(':', 1)[1]
# An empty AppendEntries (heartbeat) is the smallest request; one carrying an entry is larger
# by at least the entry (log id and payload, over 40 bytes).
sizes = [n for t, sock, call, text, n in parse(f'{trace_dir}/follower.strace')[1]
         if sock.startswith(f'127.0.0.1:{raft_port}->') and 'POST /raft' in text]
empty = min(sizes) if sizes else 0
ok_leader = check('leader, applied change sets', f'{trace_dir}/leader.strace', api_port,
                  lambda text, n: 'POST /image/changesets' in text,
                  lambda text: 'HTTP/1.1 200' in text and '{\\"index\\"' in text)
ok_follower = check('follower, AppendEntries with entries', f'{trace_dir}/follower.strace', raft_port,
                    lambda text, n: 'POST /raft' in text and n >= empty + 40,
                    lambda text: 'HTTP/1.1 200' in text)
sys.exit(0 if ok_leader and ok_follower else 1)
EOF
