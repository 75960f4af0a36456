#!/usr/bin/env bash
# Where the memory of an idle session goes, by component (issue 13): the resident pages of the
# server, credited to the live heap blocks on them and to the stacks that allocated those blocks.
#
#   scripts/memory-breakdown/run.sh BINARY [-n SESSIONS] [--subscribe] [--detail] [--keep DIR]
#
# Runs BINARY (a portcullis build, e.g. target/release/portcullis) under `heaptrack --raw`,
# creates org acme with a fresh device CA, then: a pagemap snapshot (snapshot.py) before the
# load, N idle mTLS sessions held by `portcullis-load hold` (default 2000; --subscribe: each
# with one command subscription, iot-2/cmd/+/fmt/+), a snapshot 4 s after they are all open, one
# 5 s after they closed; the server is stopped and breakdown.py prints KiB per session by
# component (resident and allocated), the total against VmRSS, and what matched no component.
# The components are regexes on the allocation stacks, in components.py.
#
# Needs: heaptrack, zstd, llvm-symbolizer, openssl, curl, ss, python3 (stdlib only), and the load
# tool: LOAD_BIN (default target/release/portcullis-load). BINARY keeps its line tables (the
# release profile's), so the stacks symbolize. Everything runs on 127.0.0.1 (PORT, default
# 27883, and PORT+1 for the admin API), in a temporary directory removed at the end (--keep DIR
# keeps the trace, snapshots and logs there; breakdown.py can be rerun on them, e.g. after
# editing components.py). About 30 s for 2,000 sessions, 45 s for 15,000; heaptrack slows the
# server, not the figures. --detail adds each component's largest block sizes and their frames.
set -euo pipefail
usage() { sed -n '5p' "$0" | sed 's/^# *//' >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || usage
binary=$(realpath "$1")
shift
sessions=2000 subscribe=() detail=() keep=""
while [ $# -gt 0 ]; do
    case $1 in
        -n) sessions=$2; shift ;;
        --subscribe) subscribe=(--subscribe 'iot-2/cmd/+/fmt/+') ;;
        --detail) detail=(--detail) ;;
        --keep) keep=$2; shift ;;
        *) usage ;;
    esac
    shift
done
load=${LOAD_BIN:-$here/../../target/release/portcullis-load}
port=${PORT:-27883}
admin=$((port + 1))
for tool in heaptrack zstdcat llvm-symbolizer openssl curl ss python3; do
    command -v "$tool" > /dev/null || { echo "memory-breakdown: $tool is needed" >&2; exit 2; }
done
for file in "$binary" "$load"; do
    [ -x "$file" ] || { echo "memory-breakdown: $file is not an executable" >&2; exit 2; }
done
# Every session is a file in the server and in the load tool.
need=$((sessions + 512))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
    ulimit -n "$need" 2> /dev/null || {
        echo "memory-breakdown: $sessions sessions need $need open files;" \
            "the hard limit (ulimit -Hn) is $(ulimit -Hn)" >&2
        exit 2
    }
fi

if [ -n "$keep" ]; then
    mkdir -p "$keep"
    work=$(realpath "$keep")
else
    work=$(mktemp -d)
fi
wrapper="" server="" loader=""
cleanup() {
    for pid in $loader $server $wrapper; do kill "$pid" 2> /dev/null || true; done
    wait 2> /dev/null || true
    if [ -z "$keep" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT
fail() {
    echo "memory-breakdown: $1; the end of the server's log:" >&2
    tail -n 5 "$work/server.log" >&2
    exit 1
}

openssl ecparam -name prime256v1 -genkey -noout -out "$work/devices.key"
openssl req -x509 -new -key "$work/devices.key" -sha256 -days 30 -subj "/CN=Breakdown Devices CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
    -out "$work/devices.pem" 2> /dev/null

# The trace's clock starts with the process: t0 places the snapshots in it.
date +%s.%N > "$work/t0"
env PORTCULLIS__MQTTS__MAX_CONNECTIONS_PER_SOURCE=1000000 \
    PORTCULLIS__MQTTS__LISTEN="127.0.0.1:$port" PORTCULLIS__ADMIN__LISTEN="127.0.0.1:$admin" \
    PORTCULLIS__STORE__DATA_DIR="$work/data" PORTCULLIS_ADMIN_TOKEN=bench-token \
    heaptrack --raw -o "$work/trace" "$binary" serve > "$work/server.out" 2> "$work/server.log" &
wrapper=$!
for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$admin/readyz" > /dev/null && break
    sleep 0.2
done
curl -sf "http://127.0.0.1:$admin/readyz" > /dev/null || fail "the server did not start"
api() { curl -sf -H "Authorization: Bearer bench-token" "$@" > /dev/null; }
api -H 'content-type: application/json' -d '{"id": "acme", "name": "Acme"}' \
    "http://127.0.0.1:$admin/api/v1/orgs"
api -H 'content-type: application/x-pem-file' --data-binary "@$work/devices.pem" \
    "http://127.0.0.1:$admin/api/v1/orgs/acme/ca-certificates"
# heaptrack starts the server as its child: the server is what listens on the port.
server=$(ss -ltnpH "sport = :$port" | grep -o 'pid=[0-9]*' | head -n 1 | cut -d= -f2)
[ -n "$server" ] || fail "no process listens on $port"

sleep 2
python3 "$here/snapshot.py" "$server" "$work/before.json"
files=$(find "/proc/$server/fd" -mindepth 1 | wc -l)
"$load" hold --port "$port" --sni acme.messaging.localhost --ca "$work/data/platform-ca.pem" \
    --client-ca-cert "$work/devices.pem" --client-ca-key "$work/devices.key" -n "$sessions" \
    --server-pid "$server" --hold-seconds 12 "${subscribe[@]}" --json > "$work/hold.json" \
    2> "$work/hold.log" &
loader=$!
# All open when the server holds a socket per session (the load tool ends early if some fail).
deadline=$((SECONDS + 600))
until [ "$(find "/proc/$server/fd" -mindepth 1 | wc -l)" -ge $((files + sessions)) ]; do
    kill -0 "$loader" 2> /dev/null || fail "the load tool ended: $(tail -n 2 "$work/hold.log")"
    [ "$SECONDS" -lt "$deadline" ] || fail "the sessions did not all open within 10 minutes"
    sleep 0.2
done
sleep 4
python3 "$here/snapshot.py" "$server" "$work/held.json"
wait "$loader" || fail "the load tool failed: $(tail -n 3 "$work/hold.log")"
loader=""
sleep 5
python3 "$here/snapshot.py" "$server" "$work/after.json"
sleep 0.5
kill -TERM "$server"
for _ in $(seq 300); do kill -0 "$server" 2> /dev/null || break; sleep 0.1; done
kill -0 "$server" 2> /dev/null && fail "the server did not stop within 30 s"
wait "$wrapper" || true
wrapper="" server=""

python3 - "$work/hold.json" <<'EOF'
import json, sys
hold = json.load(open(sys.argv[1]))
print(f"load tool: {hold['ok']:,} sessions held, {hold['failed']} failed; "
      f"{hold['server']['kib_per_session']} KiB/session of VmRSS (under heaptrack)\n")
EOF
python3 "$here/breakdown.py" --binary "$binary" --trace "$work"/trace*.raw.zst \
    --t0 "$(cat "$work/t0")" \
    --sessions "$sessions" "${detail[@]}" --json "$work/breakdown.json" \
    "$work/before.json" "$work/held.json" "$work/after.json"
