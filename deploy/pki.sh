#!/usr/bin/env bash
# A small certificate authority for one site's broker and devices (openssl only).
#
#   deploy/pki.sh init DIR                        the CA (ca.key stays on the operator's machine, offline)
#   deploy/pki.sh broker DIR HOSTNAME [--force]   the broker's certificate (also valid for 127.0.0.1)
#   deploy/pki.sh client DIR NAME [--force]       a device (NAME = its device_id) or a service identity
#   deploy/pki.sh revoke DIR NAME                 revoke NAME and regenerate crl.pem (copy it to the broker)
#
# broker and client never replace a key or certificate that exists, or a name the CA has issued and not
# revoked: --force revokes the old certificate and issues a new key and certificate, which take the old
# files' place only once signed. NAME is a device id (1-64 letters, digits, - or _) other than the
# site's own names: ca, broker, crl and fleet.
#
# The broker uses the certificate's common name as the MQTT username and client id, and the ACL in
# deploy/mosquitto/acl keys every topic on it: a device's certificate is its identity (docs/broker.md).
set -euo pipefail
umask 077 # a key is private from the moment it exists, not from a chmod after it was written

usage() {
    sed -n '2,12p' "$0" >&2
    exit 64
}
die() { # die CODE MESSAGE
    echo "pki: $2" >&2
    exit "$1"
}

force=false
args=()
for arg in "$@"; do
    if [ "$arg" = --force ]; then force=true; else args+=("$arg"); fi
done
set -- ${args[@]+"${args[@]}"}
[ $# -ge 2 ] || usage
command=$1
case "$command" in broker | client) ;; *) ! $force || die 64 "--force only applies to broker and client" ;; esac
dir=$2
days=${PKI_DAYS:-825}
[[ $days =~ ^[1-9][0-9]{0,4}$ ]] || die 64 "PKI_DAYS=$days is not a number of days"

# Temporary files live in DIR (so a rename into place is atomic) and go when the script ends, however.
temporary=()
trap 'rm -f ${temporary[@]+"${temporary[@]}"}' EXIT
scratch() { # scratch VAR SUFFIX: a new temporary file in DIR, its path in VAR
    local path
    path=$(mktemp "$dir/.pki-$2.XXXXXX")
    temporary+=("$path")
    printf -v "$1" '%s' "$path"
}

quietly() { # quietly WHAT COMMAND...: openssl's chatter only when it fails, then exit
    local what=$1 log
    shift
    scratch log log
    "$@" >"$log" 2>&1 || {
        echo "pki: $what failed:" >&2
        sed 's/^/    /' "$log" >&2
        exit 1
    }
}

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

require_ca() {
    if [ ! -f "$dir/ca.key" ] || [ ! -f "$dir/ca.cnf" ]; then
        die 66 "$dir holds no CA; create one with: deploy/pki.sh init $dir"
    fi
}

check_name() { # a device id (device/config.py) that is none of the site's own names
    local name=$1
    [[ $name =~ ^[A-Za-z0-9_-]{1,64}$ ]] ||
        die 64 "'$name' is not a valid name: use 1 to 64 letters, digits, - or _ (a device id)"
    # Without case: on macOS's file system CA.key is ca.key.
    case $(printf '%s' "$name" | tr '[:upper:]' '[:lower:]') in
    ca | crl) die 64 "'$name' is reserved: $dir/ca.* and crl.pem are the CA's own files" ;;
    broker) die 64 "'$name' is reserved for the broker's certificate: deploy/pki.sh broker $dir HOSTNAME" ;;
    fleet) die 64 "'$name' is reserved: appliance/fleet/ is the topic every device reads notices from" ;;
    esac
}

valid_serials() { # the serials of NAME's certificates that the CA issued and has not revoked
    awk -F '\t' -v subject="/CN=$1" '$1 == "V" && $6 == subject { print $4 }' "$dir/index.txt"
}

gencrl() {
    quietly "regenerating crl.pem" openssl ca -batch -config "$dir/ca.cnf" -gencrl -out "$dir/crl.pem"
    chmod 644 "$dir/crl.pem"
}

revoke_serials() { # revoke_serials SERIAL...
    local serial
    for serial in "$@"; do
        quietly "revoking certificate $serial" openssl ca -batch -config "$dir/ca.cnf" -revoke "$dir/issued/$serial.pem"
    done
    gencrl
}

issue() { # issue NAME EXTENSIONS: a new key and certificate, put in place together once signed
    local name=$1 extensions=$2 serials key csr crt ext found=() file
    require_ca
    serials=$(valid_serials "$name")
    for file in "$dir/$name.key" "$dir/$name.crt"; do
        [ ! -e "$file" ] || found+=("$file")
    done
    [ -z "$serials" ] || found+=("a valid certificate in the CA's index (serial ${serials//$'\n'/, })")
    if [ ${#found[@]} -gt 0 ] && ! $force; then
        die 73 "$name already exists: $(printf '%s; ' "${found[@]}")nothing was changed. To replace its key \
and certificate, run again with --force, which also revokes the old certificate."
    fi
    scratch key key && scratch csr csr && scratch crt crt && scratch ext ext
    printf '%s\n' "$extensions" >"$ext"
    quietly "generating a key" openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$key"
    quietly "making the request" openssl req -new -key "$key" -subj "/CN=$name" -out "$csr"
    # The CA holds one valid certificate per name (openssl's unique_subject, and one certificate is one
    # MQTT client id), so the old one goes first; if signing then fails, the old files stay as they were.
    if [ -n "$serials" ]; then
        # shellcheck disable=SC2086 # one serial a word
        revoke_serials $serials
        echo "pki: revoked $name's old certificate ($serials); install $dir/crl.pem on the broker and reload it"
    fi
    quietly "signing $name's certificate" openssl ca -batch -config "$dir/ca.cnf" -notext -days "$days" \
        -in "$csr" -out "$crt" -extfile "$ext"
    chmod 644 "$crt"
    mv -f "$key" "$dir/$name.key"
    mv -f "$crt" "$dir/$name.crt"
}

case "$command" in
init)
    [ $# -eq 2 ] || usage
    [ ! -e "$dir/ca.key" ] || die 73 "$dir already holds a CA; nothing was changed"
    mkdir -p "$dir/issued"
    chmod 700 "$dir"
    : >"$dir/index.txt"
    echo 1000 >"$dir/serial"
    echo 1000 >"$dir/crlnumber"
    ca_config >"$dir/ca.cnf"
    quietly "generating the CA key" openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/ca.key"
    quietly "making the CA certificate" openssl req -new -x509 -key "$dir/ca.key" -subj "/CN=appliance site CA" \
        -days 3650 -out "$dir/ca.crt"
    chmod 644 "$dir/ca.crt"
    gencrl
    echo "pki: CA in $dir (keep ca.key offline)"
    ;;
broker)
    [ $# -eq 3 ] || usage
    # It goes into the certificate's extensions: a host name, nothing that could add another extension.
    [[ $3 =~ ^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$ ]] || die 64 "'$3' is not a host name"
    issue broker "$(printf 'subjectAltName=DNS:%s,IP:127.0.0.1\nextendedKeyUsage=serverAuth' "$3")"
    echo "pki: $dir/broker.crt and $dir/broker.key for $3"
    ;;
client)
    [ $# -eq 3 ] || usage
    check_name "$3"
    issue "$3" "extendedKeyUsage=clientAuth"
    echo "pki: $dir/$3.crt and $dir/$3.key"
    ;;
revoke)
    [ $# -eq 3 ] || usage
    require_ca
    [[ $3 =~ ^[A-Za-z0-9_-]{1,64}$ ]] || die 64 "'$3' is not a name this CA issues"
    serials=$(valid_serials "$3")
    [ -n "$serials" ] || die 66 "the CA has no valid certificate for $3 (already revoked, or never issued)"
    # shellcheck disable=SC2086 # one serial a word
    revoke_serials $serials
    echo "pki: $3 revoked; install $dir/crl.pem on the broker and reload it"
    ;;
*) usage ;;
esac
