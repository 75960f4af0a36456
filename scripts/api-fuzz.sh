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

# An org with something in it, so that list and get operations see real resources.
curl -fsS -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d '{"id":"acme","name":"Acme"}' "$base/api/v1/orgs" >/dev/null

# Path parameters name that org; the CRL upload is left out: its bodies (PEM, DER) are media
# types schemathesis cannot generate (tests/revocation.rs covers it).
cat >"$work/schemathesis.toml" <<TOML
[parameters]
"path.org" = "acme"

[[operations]]
include-path = "/api/v1/orgs/{org}/ca-certificates/{id}/crl"
include-method = "PUT"
enabled = false
TOML

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
