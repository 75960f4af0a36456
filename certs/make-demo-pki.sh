#!/usr/bin/env bash
# Makes a demo PKI for one organisation with the openssl command line: a device CA, and one
# client certificate per identity given (default: d:sensor:dev1 and a:dashboard).
# Nothing here is committed: the files land in certs/demo/ (ignored by git).
#
#   certs/make-demo-pki.sh [identity ...]
#
# Then upload certs/demo/ca.pem as the org's CA, and connect with certs/demo/<name>.pem + .key.
set -euo pipefail
out="$(cd "$(dirname "$0")" && pwd)/demo"
mkdir -p "$out"
cd "$out"
umask 077

if [ ! -f ca.key ]; then
    openssl ecparam -name prime256v1 -genkey -noout -out ca.key
    openssl req -x509 -new -key ca.key -sha256 -days 825 -subj "/CN=Demo Devices CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out ca.pem
    echo "made $out/ca.pem (upload this one) and ca.key (keep it)"
fi

[ $# -gt 0 ] || set -- "d:sensor:dev1" "a:dashboard"
for identity in "$@"; do
    name=$(printf '%s' "$identity" | tr ':' '_')
    openssl ecparam -name prime256v1 -genkey -noout -out "$name.key"
    openssl req -new -key "$name.key" -subj "/CN=$identity" -out "$name.csr"
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' > "$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 \
        -sha256 -extfile "$name.ext" -out "$name.pem" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
    echo "made $out/$name.pem and $name.key for identity $identity"
done
