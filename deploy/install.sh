#!/bin/sh
# Installs one site's sonraft node from a bundle directory (what `scripts/bootstrap-cluster.sh
# hosts` copies to each host): run as root on the host,
#
#   sh BUNDLE/install.sh [--root DIR] [--no-start]
#
# BUNDLE holds: sonraft (the binary), sonraft.toml, sonraft.service, token, cluster-secret,
# tokens, and with TLS tls/node.pem, tls/node.key, tls/ca.pem. It installs the binary to /usr/local/bin, the config and the secrets to /etc/sonraft
# (root-owned, mode 600: systemd hands the secrets to the service as credentials), the unit to
# /etc/systemd/system, creates the `sonraft` system user, checks the config with the new binary,
# then enables and starts the unit. --root DIR installs under DIR instead of / and starts
# nothing (for a test or an image build); --no-start installs without starting.
set -eu

BUNDLE=$(cd "$(dirname "$0")" && pwd)
ROOT=""
START=1
while [ $# -gt 0 ]; do
    case "$1" in
        --root) ROOT=$2; START=0; shift 2 ;;
        --no-start) START=0; shift ;;
        *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

for f in sonraft sonraft.toml sonraft.service token cluster-secret tokens; do
    [ -e "$BUNDLE/$f" ] || { echo "install.sh: $BUNDLE/$f is missing" >&2; exit 1; }
done

# The config is checked before anything is installed: the secrets as the unit will pass them,
# and the bundle's TLS files (if any) in place of those the config names under /etc/sonraft/tls.
if [ -d "$BUNDLE/tls" ]; then
    export SONRAFT_TLS_CERT="$BUNDLE/tls/node.pem" SONRAFT_TLS_KEY="$BUNDLE/tls/node.key" \
        SONRAFT_TLS_CA="$BUNDLE/tls/ca.pem"
fi
SONRAFT_TOKEN_FILE="$BUNDLE/token" SONRAFT_CLUSTER_SECRET_FILE="$BUNDLE/cluster-secret" \
    SONRAFT_TOKENS_FILE="$BUNDLE/tokens" SONRAFT_TOKEN="" SONRAFT_CLUSTER_SECRET="" \
    "$BUNDLE/sonraft" node --config "$BUNDLE/sonraft.toml" --check-config
unset SONRAFT_TLS_CERT SONRAFT_TLS_KEY SONRAFT_TLS_CA

if [ -z "$ROOT" ] && ! id sonraft > /dev/null 2>&1; then
    useradd --system --home-dir /var/lib/sonraft --no-create-home \
        --shell /usr/sbin/nologin sonraft
fi
# The service user reads the config and its TLS files; the secrets stay root's (systemd hands
# them over as credentials). Under --root there is no such user to own them.
if [ -z "$ROOT" ]; then
    OWN="-o root -g sonraft"
    KEY_OWN="-o sonraft -g sonraft"
else
    OWN=""
    KEY_OWN=""
fi
install -d -m 755 "$ROOT/usr/local/bin" "$ROOT/etc/systemd/system"
# shellcheck disable=SC2086
install -d -m 750 $OWN "$ROOT/etc/sonraft"
# The running binary is replaced atomically; the previous one is kept as sonraft~.
install -b -m 755 "$BUNDLE/sonraft" "$ROOT/usr/local/bin/sonraft"
# shellcheck disable=SC2086
install -m 640 $OWN "$BUNDLE/sonraft.toml" "$ROOT/etc/sonraft/sonraft.toml"
for f in token cluster-secret tokens; do
    install -m 600 "$BUNDLE/$f" "$ROOT/etc/sonraft/$f"
done
install -m 644 "$BUNDLE/sonraft.service" "$ROOT/etc/systemd/system/sonraft.service"
if [ -d "$BUNDLE/tls" ]; then
    # The key is the service user's alone; certificates are public.
    # shellcheck disable=SC2086
    install -d -m 750 $OWN "$ROOT/etc/sonraft/tls"
    install -m 644 "$BUNDLE/tls/node.pem" "$BUNDLE/tls/ca.pem" "$ROOT/etc/sonraft/tls/"
    # shellcheck disable=SC2086
    install -m 600 $KEY_OWN "$BUNDLE/tls/node.key" "$ROOT/etc/sonraft/tls/node.key"
fi
echo "installed sonraft under ${ROOT:-/}"

if [ "$START" = 1 ]; then
    systemctl daemon-reload
    systemctl enable --now sonraft
    systemctl --no-pager --lines=5 status sonraft || true
fi
