#!/usr/bin/env bash
# What subscription filters cost the server in resident memory (issue 11, finding 8), measured
# with the load tool's `hold --subscribe` on 127.0.0.1; everything stops by itself.
#
#   scripts/filters-memory.sh [uncapped]     (needs: openssl, python3, curl)
#
# 1. DEVICES (default 10000) idle devices, then the same devices again, each with its one command
#    subscription iot-2/cmd/+/fmt/+: RSS before, with them connected, and after they leave.
# 2. One device sending ATTACK_FILTERS (default 20000) distinct filters in one SUBSCRIBE,
#    ROUNDS (default 7) times over new connections: RSS after each round.
# SKIP_IDLE=1 leaves out the idle round, so the subscribed devices meet a fresh server.
# Each distinct attack filter is a command filter of the one device: since the broker holds a
# device's command filters as one coarse filter, the attack adds one filter to the broker where
# it added 20,000 a round before; compare with BIN pointing at an older build.
# `uncapped` lifts the filter caps (mqtts.max_filters_per_session, mqtts.max_filters_per_org,
# broker.max_filters, broker.max_filters_per_org set to 1e9): the behaviour before the caps.
# OUT (default a temporary directory) keeps the raw JSON; BIN (default: a release build made
# here) is the directory of the portcullis and portcullis-load binaries to run.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICES=${DEVICES:-10000}
ATTACK_FILTERS=${ATTACK_FILTERS:-20000}
ROUNDS=${ROUNDS:-7}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
work=$(mktemp -d)
server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
for tool in openssl python3 curl; do
    command -v "$tool" >/dev/null || { echo "filters-memory: $tool is needed" >&2; exit 2; }
done
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet --bin portcullis --bin portcullis-load
    BIN=${CARGO_TARGET_DIR:-target}/release
fi
LOAD=$BIN/portcullis-load

openssl ecparam -name prime256v1 -genkey -noout -out "$work/devices.key"
openssl req -x509 -new -key "$work/devices.key" -sha256 -days 30 -subj "/CN=Bench Devices CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
    -out "$work/devices.pem" 2>/dev/null

if [ "${1:-}" = uncapped ]; then
    export PORTCULLIS__MQTTS__MAX_FILTERS_PER_SESSION=1000000000
    export PORTCULLIS__MQTTS__MAX_FILTERS_PER_ORG=1000000000
    export PORTCULLIS__BROKER__MAX_FILTERS=1000000000
    export PORTCULLIS__BROKER__MAX_FILTERS_PER_ORG=1000000000
fi
# Every load connection comes from 127.0.0.1: lift the per-source cap.
export PORTCULLIS__MQTTS__MAX_CONNECTIONS_PER_SOURCE=1000000
PORTCULLIS__MQTTS__LISTEN=127.0.0.1:28893 PORTCULLIS__ADMIN__LISTEN=127.0.0.1:28090 \
PORTCULLIS__STORE__DATA_DIR="$work/data" PORTCULLIS_ADMIN_TOKEN=bench-token \
    "$BIN/portcullis" serve > /dev/null 2> "$work/portcullis.log" &
server_pid=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:28090/readyz > /dev/null && break; sleep 0.1; done
api() { curl -sf -H "Authorization: Bearer bench-token" "$@" > /dev/null; }
api -H 'content-type: application/json' -d '{"id": "acme", "name": "Acme"}' \
    http://127.0.0.1:28090/api/v1/orgs
api -H 'content-type: application/x-pem-file' --data-binary "@$work/devices.pem" \
    http://127.0.0.1:28090/api/v1/orgs/acme/ca-certificates

target_args="--port 28893 --sni acme.messaging.localhost --ca $work/data/platform-ca.pem
    --client-ca-cert $work/devices.pem --client-ca-key $work/devices.key --server-pid $server_pid"
rss() { awk '/VmRSS/ {print $2}' "/proc/$server_pid/status"; }
echo "server RSS at start: $(rss) KiB"

report_devices() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
s, sub = d["server"], d["subscribe"] or {"granted": 0, "refused": 0}
print(f"{sys.argv[2]}: {d['ok']} devices, {sub['granted']} filters granted, {sub['refused']} refused: "
      f"RSS {s['rss_before_kib']} -> {s['rss_after_kib']} KiB "
      f"({s['kib_per_session']} KiB per device), {s['rss_after_close_kib']} KiB after they left")
EOF
}
if [ -z "${SKIP_IDLE:-}" ]; then
    # shellcheck disable=SC2086
    $LOAD hold $target_args -n "$DEVICES" -t 32 --hold-seconds 2 --json > "$out/idle.json"
    report_devices "$out/idle.json" "idle, no subscription"
fi
# The same devices come back, each subscribing to its commands: the memory the first run left is
# reused, so the growth is what the subscriptions (one distinct filter per device) add.
# shellcheck disable=SC2086
$LOAD hold $target_args -n "$DEVICES" -t 32 --hold-seconds 2 \
    --subscribe 'iot-2/cmd/+/fmt/+' --json > "$out/devices.json"
report_devices "$out/devices.json" "back, each with iot-2/cmd/+/fmt/+"

for round in $(seq 0 $((ROUNDS - 1))); do
    # shellcheck disable=SC2086
    $LOAD hold $target_args -n 1 -t 1 --hold-seconds 1 --first-index 900000 --timeout 120 \
        --subscribe 'iot-2/cmd/a{k}/fmt/json' --filters "$ATTACK_FILTERS" \
        --filter-offset $((round * ATTACK_FILTERS)) --json > "$out/attack.$round.json"
    python3 - "$out/attack.$round.json" "$round" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
s, sub = d["server"], d["subscribe"]
print(f"attack round {sys.argv[2]}: {sub['granted']} granted, {sub['refused']} refused; "
      f"RSS {s['rss_after_kib']} KiB held, {s['rss_after_close_kib']} KiB after close")
EOF
done
echo "server RSS at the end: $(rss) KiB (raw JSON in $out)"
curl -sf http://127.0.0.1:28090/metrics | grep -E '^portcullis_broker_filters ' || true
