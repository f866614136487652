#!/usr/bin/env bash
# A private CA and one certificate per node, for a sonraft cluster over TLS.
#
#   scripts/make-certs.sh [--new-ca] [--days N] DIR NAME=ADDR[,ADDR...] ...
#
#   scripts/make-certs.sh certs site-a=10.0.1.5,sonraft-a.example.net \
#       site-b=10.0.2.5 site-c=10.0.3.5
#
# writes into DIR:
#   ca.pem, ca.key       the CA (its key 0600; keep it off the nodes), EC P-256, 10 years
#   NAME.pem, NAME.key   node NAME's certificate (then the CA's: a chain) and key (0600),
#                        EC P-256, valid --days (default 825), with a subjectAltName for each
#                        ADDR (an IP address as IP, anything else as DNS) and usable both as a
#                        server (its listeners) and as a client (towards its peers)
#
# A node runs with  --tls-cert DIR/NAME.pem --tls-key DIR/NAME.key --tls-ca DIR/ca.pem
# and clients with  sonraft ctl --ca DIR/ca.pem   or   curl --cacert DIR/ca.pem.
#
# Idempotent: an existing CA is kept (pass --new-ca to replace it, which re-issues every node
# certificate), and a node certificate is re-issued only when it is missing, was signed by
# another CA, or does not carry exactly the addresses asked for. Needs openssl.
set -euo pipefail

usage() {
    sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

new_ca=false
days=825
while [[ $# -gt 0 ]]; do
    case "$1" in
        --new-ca) new_ca=true; shift ;;
        --days) days="${2:?--days needs a number}"; shift 2 ;;
        -h|--help) usage ;;
        --*) echo "unknown option $1" >&2; usage ;;
        *) break ;;
    esac
done
[[ $# -ge 2 ]] || usage
dir="$1"; shift
command -v openssl >/dev/null || { echo "openssl is needed (apt-get install openssl)" >&2; exit 1; }
[[ "$days" =~ ^[0-9]+$ && "$days" -gt 0 ]] || { echo "--days must be a positive number" >&2; exit 2; }

mkdir -p "$dir"
umask 077

ca_key="$dir/ca.key"
ca_pem="$dir/ca.pem"
if $new_ca || [[ ! -s "$ca_key" || ! -s "$ca_pem" ]]; then
    openssl ecparam -name prime256v1 -genkey -noout -out "$ca_key.tmp"
    openssl req -x509 -new -key "$ca_key.tmp" -sha256 -days 3650 \
        -subj "/CN=sonraft private CA $(date -u +%Y-%m-%d)" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$ca_pem.tmp"
    mv "$ca_key.tmp" "$ca_key"
    mv "$ca_pem.tmp" "$ca_pem"
    chmod 600 "$ca_key"
    chmod 644 "$ca_pem"
    echo "made a new CA: $ca_pem (key $ca_key, mode 0600)"
    new_ca=true
else
    echo "kept the CA $ca_pem (--new-ca replaces it)"
fi

# The subjectAltName list of a comma-separated address list: IP:... or DNS:...
san_of() {
    local out=() a
    IFS=',' read -ra addrs <<<"$1"
    for a in "${addrs[@]}"; do
        [[ -n "$a" ]] || continue
        if [[ "$a" =~ ^[0-9]+(\.[0-9]+){3}$ || "$a" == *:* ]]; then
            out+=("IP:$a")
        else
            out+=("DNS:$a")
        fi
    done
    local IFS=','
    echo "${out[*]}"
}

# Whether the certificate $1 carries exactly the SANs $2 (as san_of writes them). openssl
# matches each one (it spells IPv6 addresses its own way), and the count must agree.
has_sans() {
    local pem=$1 e n
    IFS=',' read -ra want <<<"$2"
    for e in "${want[@]}"; do
        case "$e" in
            IP:*) openssl x509 -in "$pem" -noout -checkip "${e#IP:}" | grep -q "does match" || return 1 ;;
            DNS:*) openssl x509 -in "$pem" -noout -checkhost "${e#DNS:}" | grep -q "does match" || return 1 ;;
        esac
    done
    n=$(openssl x509 -in "$pem" -noout -ext subjectAltName 2>/dev/null | tail -n +2 | tr ',' '\n' | grep -c .)
    [[ "$n" -eq "${#want[@]}" ]]
}

for spec in "$@"; do
    name="${spec%%=*}"
    addrs="${spec#*=}"
    if [[ "$name" == "$spec" || -z "$name" || -z "$addrs" ]]; then
        echo "bad node '$spec': give NAME=ADDR[,ADDR...]" >&2
        exit 2
    fi
    [[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || { echo "bad node name '$name'" >&2; exit 2; }
    san="$(san_of "$addrs")"
    key="$dir/$name.key"
    pem="$dir/$name.pem"
    if ! $new_ca && [[ -s "$key" && -s "$pem" ]] &&
        openssl verify -CAfile "$ca_pem" "$pem" >/dev/null 2>&1 &&
        has_sans "$pem" "$san"; then
        echo "kept $pem ($san)"
        continue
    fi
    openssl ecparam -name prime256v1 -genkey -noout -out "$key.tmp"
    openssl req -new -key "$key.tmp" -subj "/CN=$name" -out "$dir/$name.csr"
    ext="$(mktemp)"
    cat >"$ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=$san
EOF
    openssl x509 -req -in "$dir/$name.csr" -CA "$ca_pem" -CAkey "$ca_key" -CAcreateserial \
        -sha256 -days "$days" -extfile "$ext" -out "$pem.tmp" 2>/dev/null
    rm -f "$ext" "$dir/$name.csr"
    # The chain a node presents: its certificate, then the CA's.
    cat "$ca_pem" >>"$pem.tmp"
    mv "$key.tmp" "$key"
    mv "$pem.tmp" "$pem"
    chmod 600 "$key"
    chmod 644 "$pem"
    echo "made $pem ($san, $days days; key $key)"
done
