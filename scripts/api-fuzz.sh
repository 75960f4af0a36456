#!/usr/bin/env bash
# Runs schemathesis (a schema-driven fuzzer) against the real server's admin API, from the
# server's own /api/v1/openapi.json, with the admin token: any 5xx, any status code, content type
# or response body the document does not describe fails the run. Bounded (examples per
# operation and a time limit), so it fits in CI.
#
# Usage: scripts/api-fuzz.sh [path/to/portcullis]   (default: target/release/portcullis, built
# when missing). Env: FUZZ_EXAMPLES (default 25), FUZZ_SECONDS (default 180), VENV (default
# ~/.cache/portcullis-schemathesis, created when missing), SCHEMATHESIS_VERSION (default 4.*).
# Needs python3 with venv (Debian: apt-get install python3-venv), curl and coreutils timeout.
set -euo pipefail

cd "$(dirname "$0")/.."
bin="${1:-${CARGO_TARGET_DIR:-target}/release/portcullis}"
examples="${FUZZ_EXAMPLES:-25}"
seconds="${FUZZ_SECONDS:-180}"
venv="${VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/portcullis-schemathesis}"

if [ ! -x "$bin" ]; then
    cargo build --release --bin portcullis
fi
if [ ! -x "$venv/bin/schemathesis" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "schemathesis==${SCHEMATHESIS_VERSION:-4.*}"
fi

work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# Ports :0: the server picks free ones and logs them.
PORTCULLIS__MQTTS__LISTEN=127.0.0.1:0 \
PORTCULLIS__ADMIN__LISTEN=127.0.0.1:0 \
PORTCULLIS__STORE__DATA_DIR="$work/data" \
RUST_LOG=portcullis=info NO_COLOR=1 \
    "$bin" serve >"$work/server.log" 2>&1 &
server_pid=$!

admin=""
for _ in $(seq 1 300); do
    admin="$(sed -n 's/.*serving.*admin[=:] *"\{0,1\}\([0-9.]*:[0-9]*\).*/\1/p' "$work/server.log" | head -n 1)"
    [ -n "$admin" ] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        cat "$work/server.log" >&2
        echo "api-fuzz: the server did not start" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$admin" ]; then
    cat "$work/server.log" >&2
    echo "api-fuzz: no admin address in the server's log" >&2
    exit 1
fi
token="$(cat "$work/data/admin-token")"
base="http://$admin"

# An org with one of each resource in it, so that operations on `{id}` reach a real one (and its
# checks) instead of answering 404 to every generated id.
api="$base/api/v1/orgs/acme"
post() { # post PATH CONTENT-TYPE BODY → the created resource's id
    curl -fsS -H "Authorization: Bearer $token" -H "Content-Type: $2" --data-binary "$3" "$api$1" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
for org in acme doomed; do
    curl -fsS -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
        -d "{\"id\":\"$org\",\"name\":\"$org\"}" "$base/api/v1/orgs" >/dev/null
done
# Two of each: one kept for the operations that read or change it, one for those that delete it.
for n in 1 2; do
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=Fuzz CA $n" \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
        -keyout "$work/ca.key" -out "$work/ca$n.pem" 2>/dev/null
    ca[n]="$(post /ca-certificates application/x-pem-file "@$work/ca$n.pem")"
    server[n]="$(post /server-certificates/generate application/json \
        '{"dns_name":"acme.messaging.localhost","key_type":"ecdsa-p256"}')"
    csr[n]="$(post /csrs application/json \
        '{"common_name":"acme.messaging.localhost","dns_names":["acme.messaging.localhost"],"key_type":"ecdsa-p256"}')"
    signing[n]="$(post /signing-certificates application/json "{\"alias\":\"fuzz$n\"}")"
    tok[n]="$(post /tokens application/json "{\"name\":\"fuzz$n\",\"role\":\"viewer\",\"ttl_seconds\":3600}")"
    blocked[n]="$(post /blocked-devices application/json "{\"identity\":\"d:sensor:dev$n\",\"reason\":\"fuzz\"}")"
done
grant="$(curl -fsS -H "Authorization: Bearer $token" "$api/grants" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')"

# Path parameters name those (deletes take the spares, and the org `doomed`); the CRL upload is
# left out: its bodies (PEM, DER) are media types schemathesis cannot generate
# (tests/revocation.rs covers it). The first matching entry applies.
{
    cat <<TOML
[parameters]
"path.org" = "acme"

[[operations]]
include-path = "/api/v1/orgs/{org}/ca-certificates/{id}/crl"
include-method = "PUT"
enabled = false

[[operations]]
include-path = "/api/v1/orgs/{org}"
include-method = "DELETE"
parameters = { "path.org" = "doomed" }
TOML
    # resource path, the one for deletes, the one for everything else
    while read -r path spare kept; do
        cat <<TOML

[[operations]]
include-path = "/api/v1/orgs/{org}/$path/{id}"
include-method = "DELETE"
parameters = { "path.org" = "acme", "path.id" = "$spare" }

[[operations]]
include-path-regex = "/$path/\\\\{id\\\\}"
parameters = { "path.org" = "acme", "path.id" = "$kept" }
TOML
    done <<LIST
ca-certificates ${ca[2]} ${ca[1]}
server-certificates ${server[2]} ${server[1]}
csrs ${csr[2]} ${csr[1]}
signing-certificates ${signing[2]} ${signing[1]}
tokens ${tok[2]} ${tok[1]}
blocked-devices ${blocked[2]} ${blocked[1]}
grants $grant $grant
LIST
} >"$work/schemathesis.toml"

# Run from the temporary directory: schemathesis keeps a cache in its working directory.
cd "$work"
status=0
timeout --signal=INT "$seconds" "$venv/bin/schemathesis" --config-file "$work/schemathesis.toml" run "$base/api/v1/openapi.json" \
    --url "$base" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance \
    --max-examples "$examples" \
    --workers 1 \
    --seed 11 \
    || status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 130 ]; then
    echo "api-fuzz: stopped at the ${seconds}s limit" >&2
fi
exit "$status"
