#!/usr/bin/env bash
# Upgrades a cluster of the previous release to this checkout, the way an operator would:
#   1. builds the previous release (scripts/releases.tsv: version -> commit) in a separate git
#      worktree, with its own target directory (kept between runs, so later runs are quick);
#   2. brings up a three-site cluster on it with *that release's* bootstrap script;
#   3. writes data with that release's ctl: an image of its own plus change sets, and notes
#      what it wrote;
#   4. builds this checkout and rolls the cluster to it with scripts/rolling-upgrade.sh;
#   5. verifies, with the new ctl, that every written value is there at its version, that
#      the cluster's effective command format rose to the new release's, and that new change
#      sets apply; then stops the cluster. The worktree and its build stay (quick re-runs);
#      `git worktree remove run/upgrade-from-previous/src-VERSION` drops them.
#
#   scripts/upgrade-from-previous.sh [VERSION]     (default: the newest recorded release
#                                                  other than this checkout's version)
#
# Environment: UPGRADE_DIR (default ./run/upgrade-from-previous), KEEP=1 leaves the cluster
# running. Needs git and the recorded commit in this repository's history.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${UPGRADE_DIR:-$ROOT/run/upgrade-from-previous}
log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

CURRENT=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
VERSION=${1:-}
if [[ -z "$VERSION" ]]; then
    VERSION=$(grep -v '^#' "$ROOT/scripts/releases.tsv" | awk -F'\t' -v cur="$CURRENT" 'NF >= 2 && $1 != cur { v = $1 } END { print v }')
fi
[[ -n "$VERSION" ]] || die "no previous release in scripts/releases.tsv"
COMMIT=$(grep -v '^#' "$ROOT/scripts/releases.tsv" | awk -F'\t' -v v="$VERSION" '$1 == v { print $2 }')
[[ -n "$COMMIT" ]] || die "release $VERSION is not in scripts/releases.tsv"
git -C "$ROOT" cat-file -e "$COMMIT^{commit}" 2> /dev/null ||
    die "commit $COMMIT of release $VERSION is not in this repository (fetch it, or clone with full history)"

mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
SRC="$WORK/src-$VERSION"
RUN="$WORK/run"

log "previous release $VERSION is commit $COMMIT; this checkout is $CURRENT"
if [[ ! -d "$SRC" ]]; then
    git -C "$ROOT" worktree add --detach "$SRC" "$COMMIT" > /dev/null
fi
cleanup() {
    if [[ "${KEEP:-0}" != 1 ]]; then
        SONRAFT_RUN_DIR="$RUN" SONRAFT_BIN="$OLD" bash "$SRC/scripts/bootstrap-cluster.sh" stop > /dev/null 2>&1 || true
    fi
}
OLD="$WORK/target-$VERSION/release/sonraft"
trap cleanup EXIT

log "building $VERSION (separate target directory $WORK/target-$VERSION)"
(cd "$SRC" && CARGO_TARGET_DIR="$WORK/target-$VERSION" cargo build --release --quiet --bin sonraft)
log "building this checkout ($CURRENT)"
(cd "$ROOT" && cargo build --release --quiet --bin sonraft)
NEW="$ROOT/target/release/sonraft"
[[ "$("$OLD" --version)" == "sonraft $VERSION" ]] || die "the old build reports $("$OLD" --version)"

log "starting a three-site cluster on $VERSION"
rm -rf "$RUN"
SONRAFT_RUN_DIR="$RUN" SONRAFT_BIN="$OLD" SONRAFT_DEMO_CELLS=30 bash "$SRC/scripts/bootstrap-cluster.sh" > "$WORK/bootstrap.log" 2>&1 ||
    { tail -20 "$WORK/bootstrap.log" >&2; die "bootstrap of $VERSION failed"; }
# shellcheck disable=SC1091
source "$RUN/cluster.env"

log "writing data with the $VERSION ctl"
cat > "$WORK/image.json" << 'JSON'
{"sites": [{"id": "UPG", "name": "upgrade check", "lat": 48.1, "lon": 11.5}],
 "cells": [
  {"id": "UPG-1", "site": "UPG", "rat": "LTE", "pci": 101, "arfcn": 1300, "azimuth": 0},
  {"id": "UPG-2", "site": "UPG", "rat": "LTE", "pci": 102, "arfcn": 1300, "azimuth": 120},
  {"id": "UPG-3", "site": "UPG", "rat": "NR", "pci": 103, "arfcn": 632628, "azimuth": 240}]}
JSON
"$OLD" ctl import "$WORK/image.json" > /dev/null
declare -A TILT=([UPG-1]=35 [UPG-2]=42 [UPG-3]=33)
for c in UPG-1 UPG-2 UPG-3; do
    "$OLD" ctl propose --reason "before the upgrade" --set "cell/$c:electrical_tilt=${TILT[$c]}" > /dev/null
done
# The first numeric "$1": value of the JSON object on stdin (top-level fields come first).
json_field() { grep -o "\"$1\":-\{0,1\}[0-9]*" | head -1 | cut -d: -f2; }
declare -A VERSION_OF=()
for c in UPG-1 UPG-2 UPG-3; do
    VERSION_OF[$c]=$("$OLD" ctl cell "$c" --json | json_field version)
done

log "rolling the cluster to $CURRENT"
SONRAFT_RUN_DIR="$RUN" bash "$ROOT/scripts/rolling-upgrade.sh" "$NEW"

log "verifying with the $CURRENT ctl"
for c in UPG-1 UPG-2 UPG-3; do
    j=$("$NEW" ctl cell "$c" --json)
    v=$(json_field version <<< "$j") t=$(json_field electrical_tilt <<< "$j")
    [[ "$v" == "${VERSION_OF[$c]}" && "$t" == "${TILT[$c]}" ]] ||
        die "cell $c: version $v tilt $t after the upgrade, expected version ${VERSION_OF[$c]} tilt ${TILT[$c]}"
    echo "  cell $c: version $v, electrical_tilt $t (as written by $VERSION)"
done
"$NEW" ctl health > /dev/null
first=$(echo "$SONRAFT_NODES" | cut -d' ' -f1)
effective=""
for _ in $(seq 1 100); do
    effective=$("$NEW" ctl node-info "$first" | sed -n 's/^effective_command_format=//p')
    [[ "$effective" == "$("$NEW" ctl node-info "$first" | sed -n 's/^command_format=//p')" ]] && break
    sleep 0.1
done
echo "  effective command format after the upgrade: $effective"
"$NEW" ctl propose --reason "after the upgrade" --set cell/UPG-1:electrical_tilt=40 > "$WORK/after.txt"
grep -q "^applied" "$WORK/after.txt" || die "a change set after the upgrade did not apply: $(cat "$WORK/after.txt")"
echo "  new change set: $(cat "$WORK/after.txt")"
echo "upgrade from $VERSION to $CURRENT: ok"
