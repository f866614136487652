#!/usr/bin/env bash
# Soak benchmark (not a test): runs the three-site demo of scripts/bootstrap-cluster.sh at a
# chosen size and counter period for a chosen time, and prints each node's resident memory and
# disk use every minute, then the growth rates over the last half of the run.
#
#   scripts/soak.sh [--cells N] [--period-ms MS] [--minutes M] [--run-dir DIR] [--keep]
#
#   --cells N        simulated cells (default 3000)
#   --period-ms MS   counter period of the simulated antennas (default 500)
#   --minutes M      how long to sample after the demo is up (default 60)
#   --run-dir DIR    where the cluster lives (default: a new directory under $TMPDIR or /tmp);
#                    it must not hold a running cluster
#   --keep           leave the cluster running at the end (default: stop it)
#
# Environment: SONRAFT_BIN (default: release build of this checkout), SONRAFT_NODE_ARGS (extra
# node flags, e.g. "--raw-counter-retention 30m --store-cache 32MiB").
#
# Columns per node: RSS (VmRSS, MB), disk (du of the data directory, MB) and, of that disk,
# raw counters (bytes of the period files, MB: the retention's logical size, since a period
# file is the reports as received plus a few bytes each). The summary gives, per node and over
# the last half, the least-squares growth rate (MB/minute), the range (max-min) of the disk
# relative to its mean, and the largest disk over the raw counters' logical size. Nothing here
# scrapes /metrics: a scrape drains the metrics' buffers and would hide a recorder that never
# does so itself.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CELLS=3000
PERIOD_MS=500
MINUTES=60
RUN_DIR=""
KEEP=0
SITES=(site-a site-b site-c)

while [[ $# -gt 0 ]]; do
    case "$1" in
        --cells) CELLS=$2; shift 2 ;;
        --period-ms) PERIOD_MS=$2; shift 2 ;;
        --minutes) MINUTES=$2; shift 2 ;;
        --run-dir) RUN_DIR=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
for n in "$CELLS" "$PERIOD_MS" "$MINUTES"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "--cells, --period-ms and --minutes take positive integers" >&2; exit 2; }
done

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ -z "$RUN_DIR" ]]; then
    RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sonraft-soak-$(date +%Y%m%d-%H%M%S)-XXXX")
fi
mkdir -p "$RUN_DIR"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
if [[ -n "$(ls -A "$RUN_DIR")" ]]; then
    echo "the run directory $RUN_DIR is not empty: give a new one" >&2
    exit 2
fi

export SONRAFT_RUN_DIR=$RUN_DIR SONRAFT_DEMO_CELLS=$CELLS SONRAFT_SIM_PERIOD_MS=$PERIOD_MS
stop_cluster() {
    if [[ $KEEP -eq 0 ]]; then
        "$ROOT/scripts/bootstrap-cluster.sh" stop > /dev/null 2>&1 || true
    fi
}
trap stop_cluster EXIT

log "soak: $CELLS cells, period $PERIOD_MS ms, $MINUTES minutes, run directory $RUN_DIR"
"$ROOT/scripts/bootstrap-cluster.sh" up > "$RUN_DIR/bootstrap.out"

# Files come and go while these run (du and find then exit 1): their totals still count.
rss_mb() { # pid
    awk '/^VmRSS:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status" 2> /dev/null || echo "-"
}
disk_mb() { # dir
    { du -sk "$1" 2> /dev/null || true; } | awk '{ printf "%.0f", $1 / 1024 }'
}
raw_mb() { # dir
    { find "$1" -maxdepth 1 -name '*.period' -printf '%s\n' 2> /dev/null || true; } |
        awk '{ s += $1 } END { printf "%.0f", s / 1048576 }'
}

SAMPLES="$RUN_DIR/soak-samples.tsv"
printf 'minute\tsite\trss_mb\tdisk_mb\traw_mb\n' > "$SAMPLES"
header=$(printf '%6s' minute)
for s in "${SITES[@]}"; do header+=$(printf ' | %-22s' "$s RSS/disk/raw MB"); done
echo "$header"
start=$(date +%s)
for minute in $(seq 0 "$MINUTES"); do
    # Sample at whole minutes after the cluster was up.
    while (( $(date +%s) < start + minute * 60 )); do sleep 1; done
    row=$(printf '%6d' "$minute")
    for s in "${SITES[@]}"; do
        pid=$(cat "$RUN_DIR/$s/node.pid" 2> /dev/null || echo 0)
        if [[ "$pid" != 0 && -r /proc/$pid/status ]]; then
            r=$(rss_mb "$pid")
        else
            r="-"
        fi
        d=$(disk_mb "$RUN_DIR/$s/data")
        c=$(raw_mb "$RUN_DIR/$s/data/counters")
        printf '%d\t%s\t%s\t%s\t%s\n' "$minute" "$s" "$r" "$d" "$c" >> "$SAMPLES"
        row+=$(printf ' | %-22s' "$r / $d / $c")
    done
    echo "$row"
done

echo
echo "over the last half (minutes $((MINUTES - MINUTES / 2))..$MINUTES):"
awk -F'\t' -v from=$((MINUTES - MINUTES / 2)) '
    NR > 1 && $1 >= from && $3 != "-" {
        s = $2; x = $1
        n[s]++; sx[s] += x; sxx[s] += x * x
        sr[s] += $3; sxr[s] += x * $3
        sd[s] += $4; sxd[s] += x * $4
        if (!(s in dmin) || $4 < dmin[s]) dmin[s] = $4
        if (!(s in dmax) || $4 > dmax[s]) dmax[s] = $4
        if (!(s in rmin) || $3 < rmin[s]) rmin[s] = $3
        if (!(s in rmax) || $3 > rmax[s]) rmax[s] = $3
        if (!(s in raw) || $5 > raw[s]) raw[s] = $5
    }
    END {
        printf "%-7s %14s %14s %16s %12s %18s\n", "site", "RSS MB/min", "disk MB/min", "disk range/mean", "RSS range", "disk max / raw"
        for (s in n) {
            den = n[s] * sxx[s] - sx[s] * sx[s]
            gr = den ? (n[s] * sxr[s] - sx[s] * sr[s]) / den : 0
            gd = den ? (n[s] * sxd[s] - sx[s] * sd[s]) / den : 0
            mean = sd[s] / n[s]
            printf "%-7s %+14.2f %+14.2f %15.1f%% %5d-%-6d %8d / %-8d\n", s, gr, gd,
                mean ? 100 * (dmax[s] - dmin[s]) / mean : 0, rmin[s], rmax[s], dmax[s], raw[s]
        }
    }' "$SAMPLES" | sort
echo
echo "samples: $SAMPLES"
