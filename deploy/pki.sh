#!/usr/bin/env bash
# A small certificate authority for one site's broker and devices (openssl only).
#
#   deploy/pki.sh init DIR                 the CA (ca.key stays on the operator's machine, offline)
#   deploy/pki.sh broker DIR HOSTNAME      the broker's certificate (also valid for 127.0.0.1)
#   deploy/pki.sh client DIR NAME          a device (NAME = its device_id) or a service identity
#   deploy/pki.sh revoke DIR NAME          revoke NAME and regenerate crl.pem (copy it to the broker)
#
# The broker uses the certificate's common name as the MQTT username (use_identity_as_username), and the
# ACL in deploy/mosquitto/acl keys every topic on it: a device's certificate is its identity.
set -euo pipefail

usage() { sed -n '2,10p' "$0" >&2; exit 64; }
[ $# -ge 2 ] || usage
command=$1
dir=$2
days=${PKI_DAYS:-825}

ca_config() {
    cat <<CONF
[ca]
default_ca = site
[site]
dir = $dir
database = $dir/index.txt
new_certs_dir = $dir/issued
certificate = $dir/ca.crt
private_key = $dir/ca.key
serial = $dir/serial
crlnumber = $dir/crlnumber
default_md = sha256
default_crl_days = 3650
policy = anything
[anything]
commonName = supplied
CONF
}

sign() {  # sign NAME with extensions EXT (a file)
    local name=$1 ext=$2
    openssl req -new -key "$dir/$name.key" -subj "/CN=$name" -out "$dir/$name.csr" 2>/dev/null
    openssl ca -batch -config "$dir/ca.cnf" -notext -days "$days" -in "$dir/$name.csr" \
        -out "$dir/$name.crt" -extfile "$ext" >/dev/null 2>&1
    rm -f "$dir/$name.csr" "$ext"
    chmod 600 "$dir/$name.key"
}

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/$1.key" 2>/dev/null; }

gencrl() { openssl ca -batch -config "$dir/ca.cnf" -gencrl -out "$dir/crl.pem" >/dev/null 2>&1; }

case "$command" in
init)
    [ ! -e "$dir/ca.key" ] || { echo "pki: $dir already holds a CA" >&2; exit 1; }
    mkdir -p "$dir/issued"
    chmod 700 "$dir"
    : >"$dir/index.txt"
    echo 1000 >"$dir/serial"
    echo 1000 >"$dir/crlnumber"
    ca_config >"$dir/ca.cnf"
    key ca
    openssl req -new -x509 -key "$dir/ca.key" -subj "/CN=appliance site CA" -days 3650 -out "$dir/ca.crt"
    chmod 600 "$dir/ca.key"
    gencrl
    echo "pki: CA in $dir (keep ca.key offline)"
    ;;
broker)
    [ $# -eq 3 ] || usage
    key broker
    ext=$(mktemp)
    printf 'subjectAltName=DNS:%s,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' "$3" >"$ext"
    sign broker "$ext"
    echo "pki: $dir/broker.crt for $3"
    ;;
client)
    [ $# -eq 3 ] || usage
    [[ $3 =~ ^[A-Za-z0-9_-]{1,64}$ ]] || { echo "pki: name must be letters, digits, - or _" >&2; exit 64; }
    key "$3"
    ext=$(mktemp)
    printf 'extendedKeyUsage=clientAuth\n' >"$ext"
    sign "$3" "$ext"
    echo "pki: $dir/$3.crt and $dir/$3.key"
    ;;
revoke)
    [ $# -eq 3 ] || usage
    openssl ca -batch -config "$dir/ca.cnf" -revoke "$dir/$3.crt" >/dev/null 2>&1
    gencrl
    echo "pki: $3 revoked; install $dir/crl.pem on the broker and reload it"
    ;;
*) usage ;;
esac
