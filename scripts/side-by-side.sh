#!/usr/bin/env bash
# Side by side: Portcullis, mosquitto (mTLS, set_tcp_nodelay true) and the embedded broker's own
# plain listener, on the same PKI, measured by the same load tool, interleaved (A B C A B C …),
# then medians and ratios. Everything runs on 127.0.0.1 and stops by itself.
#
#   scripts/side-by-side.sh [rounds]        (default 3; needs: openssl, mosquitto, python3, curl)
#
# Environment: N (connections per connect run, default 2000), T (workers, default 32),
# HOLD (idle sessions for the memory run, default 1000), SECS (throughput seconds, default 5),
# RATE (messages/s per publisher for the latency run, default 2500), OUT (directory kept for
# the raw JSON, default a temporary one), BASE_BIN (an earlier build of portcullis measured in
# the same rounds, e.g. one built from the commit before a change: before/after ratios), ONLY
# (the measurements to take, e.g. ONLY=resume for many pairs of one; default all of hold,
# connect, known, resume, flood, rate).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
N=${N:-2000}
T=${T:-32}
HOLD=${HOLD:-1000}
SECS=${SECS:-5}
RATE=${RATE:-2500}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

for tool in openssl mosquitto python3 curl; do
    command -v "$tool" >/dev/null || { echo "side-by-side: $tool is needed" >&2; exit 2; }
done
cargo build --release --quiet --bin portcullis --bin portcullis-load
LOAD=target/release/portcullis-load

# One device CA for every server; mosquitto's server certificate from its own CA.
openssl ecparam -name prime256v1 -genkey -noout -out "$work/devices.key"
openssl req -x509 -new -key "$work/devices.key" -sha256 -days 30 -subj "/CN=Bench Devices CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
    -out "$work/devices.pem" 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out "$work/server-ca.key"
openssl req -x509 -new -key "$work/server-ca.key" -sha256 -days 30 -subj "/CN=Bench Server CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
    -out "$work/server-ca.pem" 2>/dev/null
openssl ecparam -name prime256v1 -genkey -noout -out "$work/server.key"
openssl req -new -key "$work/server.key" -subj "/CN=acme.messaging.localhost" -out "$work/server.csr"
printf 'subjectAltName=DNS:acme.messaging.localhost\nextendedKeyUsage=serverAuth\n' > "$work/server.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/server-ca.pem" -CAkey "$work/server-ca.key" \
    -CAcreateserial -days 30 -sha256 -extfile "$work/server.ext" -out "$work/server.pem" 2>/dev/null

# Portcullis, with org acme and the device CA: start_portcullis NAME BINARY MQTTS_PORT ADMIN_PORT
# [VAR=VALUE…] leaves the server's pid in $started; the extra settings are for keys a build knows.
start_portcullis() {
    local name=$1 binary=$2 mqtts=$3 admin=$4
    shift 4
    env "$@" PORTCULLIS__MQTTS__LISTEN=127.0.0.1:$mqtts PORTCULLIS__ADMIN__LISTEN=127.0.0.1:$admin \
        PORTCULLIS__STORE__DATA_DIR="$work/$name-data" PORTCULLIS_ADMIN_TOKEN=bench-token \
        "$binary" serve > /dev/null 2> "$work/$name.log" &
    started=$!
    pids+=("$started")
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$admin/readyz" > /dev/null && break; sleep 0.1; done
    api -H 'content-type: application/json' -d '{"id": "acme", "name": "Acme"}' \
        "http://127.0.0.1:$admin/api/v1/orgs"
    api -H 'content-type: application/x-pem-file' --data-binary "@$work/devices.pem" \
        "http://127.0.0.1:$admin/api/v1/orgs/acme/ca-certificates"
}
api() { curl -sf -H "Authorization: Bearer bench-token" "$@" > /dev/null; }
# Every load connection comes from 127.0.0.1: the per-source cap is lifted.
start_portcullis portcullis target/release/portcullis 28883 28080 \
    PORTCULLIS__MQTTS__MAX_CONNECTIONS_PER_SOURCE=1000000
portcullis_pid=$started
# BASE_BIN: an earlier build of portcullis, measured beside this one in the same rounds ("base");
# BASE_ENV: settings for it (e.g. the per-source cap, for a build that has one).
if [ -n "${BASE_BIN:-}" ]; then
    # shellcheck disable=SC2086
    start_portcullis base "$BASE_BIN" 28983 28180 ${BASE_ENV:-}
    base_pid=$started
fi

# mosquitto: mutual TLS against the same device CA, Nagle off.
cat > "$work/mosquitto.conf" <<EOF
listener 28884 127.0.0.1
cafile $work/devices.pem
certfile $work/server.pem
keyfile $work/server.key
require_certificate true
allow_anonymous true
set_tcp_nodelay true
persistence false
max_connections -1
log_dest none
# Started as root, mosquitto would switch to its own user, which cannot read this key.
user $(id -un)
EOF
mosquitto -c "$work/mosquitto.conf" &
mosquitto_pid=$!
pids+=("$mosquitto_pid")

# The embedded broker alone (plain TCP, MQTT 5): the forwarding overhead's baseline.
$LOAD broker --listeners 4 > "$work/broker.json" &
broker_pid=$!
pids+=("$broker_pid")
for _ in $(seq 100); do [ -s "$work/broker.json" ] && break; sleep 0.1; done
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d[sys.argv[2]] if not isinstance(d[sys.argv[2]], list) else ','.join(map(str, d[sys.argv[2]])))" "$work/broker.json" "$1"; }
sleep 0.5

tls_client="--client-ca-cert $work/devices.pem --client-ca-key $work/devices.key"
portcullis="--port 28883 --sni acme.messaging.localhost --ca $work/portcullis-data/platform-ca.pem $tls_client --server-pid $portcullis_pid"
base="--port 28983 --sni acme.messaging.localhost --ca $work/base-data/platform-ca.pem $tls_client --server-pid ${base_pid:-0}"
# Each Portcullis measurement is taken of the base build too, right after, when there is one.
both() { # label mode args...
    local label=$1 mode=$2
    shift 2
    run portcullis "$label" "$mode" $portcullis "$@"
    if [ -n "${BASE_BIN:-}" ]; then run base "$label" "$mode" $base "$@"; fi
}
mosquitto="--port 28884 --sni acme.messaging.localhost --ca $work/server-ca.pem $tls_client --server-pid $mosquitto_pid"
plain="--plain --protocol 5 --port $(field ports) --username $(field username) --password $(field password) --server-pid $broker_pid"
raw_topic="--pub-topic iot-2/type/sensor/id/dev{i}/evt/load/fmt/bin --sub-filter iot-2/type/+/id/+/evt/+/fmt/+"

next=0
run() { # server label mode args...: one run, its JSON kept as <server>.<label>.<round>.json
    local server=$1 label=$2 mode=$3
    shift 3
    case ",${ONLY:-hold,connect,known,resume,flood,rate}," in *",$label,"*) ;; *) return 0 ;; esac
    next=$((next + 100000))
    if ! $LOAD "$mode" "$@" --first-index $next --json > "$out/$server.$label.$round.json" \
        2>> "$out/stderr.log"; then
        echo "side-by-side: $server $label (round $round) failed; see $out/stderr.log" >&2
        tail -n 3 "$out/stderr.log" >&2
    fi
}

# Memory first, on fresh servers.
round=0
both hold hold -n "$HOLD" --hold-seconds 1
run mosquitto hold hold $mosquitto -n "$HOLD" --hold-seconds 1 --client-id-template "dev{i}"
run broker hold hold $plain -n "$HOLD" --hold-seconds 1

for round in $(seq 1 "$rounds"); do
    echo "round $round/$rounds" >&2
    both connect connect -n "$N" -t "$T"
    run mosquitto connect connect $mosquitto -n "$N" -t "$T" --client-id-template "dev{i}"
    run broker connect connect $plain -n "$N" -t "$T"
    both known connect -n "$N" -t "$T" --known-devices
    run mosquitto known connect $mosquitto -n "$N" -t "$T" --known-devices --client-id-template "dev{i}"
    both resume connect -n "$N" -t "$T" --resume
    run mosquitto resume connect $mosquitto -n "$N" -t "$T" --resume --client-id-template "dev{i}"
    both flood throughput -P 4 -S 1 --qos 0 --size 64 --duration "$SECS"
    run broker flood throughput $plain -P 4 -S 1 --qos 0 --size 64 --duration "$SECS" $raw_topic
    both rate throughput -P 4 -S 1 --qos 0 --size 64 --duration "$SECS" --rate "$RATE"
    run broker rate throughput $plain -P 4 -S 1 --qos 0 --size 64 --duration "$SECS" --rate "$RATE" $raw_topic
done

python3 scripts/side-by-side-report.py "$out"
echo "raw JSON in $out" >&2
