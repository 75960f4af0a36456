#!/usr/bin/env bash
# Side by side: Portcullis, mosquitto (mTLS, set_tcp_nodelay true) and the embedded broker's own
# plain listener, on the same PKI, measured by the same load tool, interleaved (A B C A B C …),
# then medians and ratios. Everything runs on 127.0.0.1 and stops by itself.
#
#   scripts/side-by-side.sh [rounds]        (default 3; needs: openssl, mosquitto, python3, curl)
#
# Environment: N (connections per connect run, default 2000), T (workers, default 32),
# HOLD (idle sessions for the hold run, default 1000), SECS (throughput seconds, default 5),
# RATE (messages/s per publisher for the latency run, default 2500), OUT (directory kept for
# the raw JSON, default a temporary one), BASE_BIN (an earlier build of portcullis measured in
# the same rounds, e.g. one built from the commit before a change: before/after ratios), ONLY
# (the measurements to take, e.g. ONLY=resume for many pairs of one; default all of memory,
# hold, connect, known, resume, flood, rate), PORTCULLIS_BIN and LOAD_BIN (prebuilt portcullis
# and portcullis-load: what is given is not built; by default both are built in release).
#
# The memory measurement: total RSS growth per idle session, each run on a fresh server process
# (glibc does not give the memory of closed sessions back, so a server measures once), for every
# size in HOLD_SIZES (default "2000 15000"), idle and with one command subscription per device,
# MEMORY_ROUNDS times (default 1), the servers interleaved in each round: start, RSS before, hold
# the sessions 5 s (the load tool reads the RSS at the end: sessions idle that long; Portcullis
# gives an idle session's buffers back after 2 s), RSS 5 s after they closed, stop.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
N=${N:-2000}
T=${T:-32}
HOLD=${HOLD:-1000}
SECS=${SECS:-5}
RATE=${RATE:-2500}
HOLD_SIZES=${HOLD_SIZES:-2000 15000}
MEMORY_ROUNDS=${MEMORY_ROUNDS:-1}
ONLY=${ONLY:-memory,hold,connect,known,resume,flood,rate}
out=${OUT:-$(mktemp -d)}
mkdir -p "$out"
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
    rmdir "$out" 2> /dev/null || true # nothing measured: no empty results directory left behind
}
trap cleanup EXIT
wanted() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

for tool in openssl mosquitto python3 curl; do
    command -v "$tool" >/dev/null || { echo "side-by-side: $tool is needed" >&2; exit 2; }
done
PORTCULLIS=${PORTCULLIS_BIN:-target/release/portcullis}
LOAD=${LOAD_BIN:-target/release/portcullis-load}
build=()
if [ -z "${PORTCULLIS_BIN:-}" ]; then build+=(--bin portcullis); fi
if [ -z "${LOAD_BIN:-}" ]; then build+=(--bin portcullis-load); fi
if [ ${#build[@]} -gt 0 ]; then cargo build --release --quiet "${build[@]}"; fi
for binary in "$PORTCULLIS" "$LOAD" ${BASE_BIN:+"$BASE_BIN"}; do
    [ -x "$binary" ] || { echo "side-by-side: $binary is not an executable" >&2; exit 2; }
done

# Every held session is a file in the load tool and in the server: raise the open-files limit
# as far as the hard limit allows, and stop here if that is not enough.
largest=0
if wanted memory; then
    for size in $HOLD_SIZES; do [ "$size" -gt "$largest" ] && largest=$size; done
fi
if wanted hold && [ "$HOLD" -gt "$largest" ]; then largest=$HOLD; fi
need=$((largest + 512))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
    hard=$(ulimit -Hn)
    if [ "$hard" = unlimited ] || [ "$hard" -ge "$need" ]; then ulimit -n "$need"; else ulimit -n "$hard"; fi
    if [ "$(ulimit -n)" -lt "$need" ]; then
        echo "side-by-side: holding $largest sessions needs $need open files per process, and the" \
            "hard limit is $hard (ulimit -Hn): raise it, or lower HOLD_SIZES / HOLD" >&2
        exit 2
    fi
fi

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
    curl -sf "http://127.0.0.1:$admin/readyz" > /dev/null || failed_to_start "$name"
    api -H 'content-type: application/json' -d '{"id": "acme", "name": "Acme"}' \
        "http://127.0.0.1:$admin/api/v1/orgs"
    api -H 'content-type: application/x-pem-file' --data-binary "@$work/devices.pem" \
        "http://127.0.0.1:$admin/api/v1/orgs/acme/ca-certificates"
}
api() { curl -sf -H "Authorization: Bearer bench-token" "$@" > /dev/null; }
# mosquitto: mutual TLS against the same device CA, Nagle off. start_mosquitto NAME PORT leaves
# its pid in $started.
start_mosquitto() {
    local name=$1 port=$2
    cat > "$work/$name.conf" <<EOF
listener $port 127.0.0.1
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
    mosquitto -c "$work/$name.conf" 2> "$work/$name.log" &
    started=$!
    pids+=("$started")
    for _ in $(seq 100); do (: > "/dev/tcp/127.0.0.1/$port") 2> /dev/null && break; sleep 0.1; done
    (: > "/dev/tcp/127.0.0.1/$port") 2> /dev/null || failed_to_start "$name"
}
failed_to_start() {
    echo "side-by-side: $1 did not start; the end of its log:" >&2
    tail -n 5 "$work/$1.log" >&2
    exit 1
}
report() {
    python3 scripts/side-by-side-report.py "$out"
    echo "raw JSON in $out" >&2
}
tls_client="--client-ca-cert $work/devices.pem --client-ca-key $work/devices.key"

# The memory runs: a fresh server each (see the top), stopped with TERM (KILL after 10 s).
stop() {
    local pid=$1 kept=() other
    kill -TERM "$pid" 2> /dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2> /dev/null || true
    wait "$pid" 2> /dev/null || true
    for other in "${pids[@]}"; do [ "$other" = "$pid" ] || kept+=("$other"); done
    pids=("${kept[@]}")
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
memory() { # server size idle|subscribed round: <server>.memory-<size>-<kind>.<round>.json
    local server=$1 size=$2 kind=$3 round=$4 pid start after_close args=() subscribe=()
    case $server in
        portcullis | base)
            rm -rf "$work/memory-$server-data"
            if [ "$server" = portcullis ]; then
                start_portcullis "memory-$server" "$PORTCULLIS" 29883 29080 \
                    PORTCULLIS__MQTTS__MAX_CONNECTIONS_PER_SOURCE=1000000
            else
                # shellcheck disable=SC2086
                start_portcullis "memory-$server" "$BASE_BIN" 29883 29080 ${BASE_ENV:-}
            fi
            args=(--port 29883 --ca "$work/memory-$server-data/platform-ca.pem") ;;
        mosquitto)
            start_mosquitto memory-mosquitto 29884
            args=(--port 29884 --ca "$work/server-ca.pem" --client-id-template "dev{i}") ;;
    esac
    pid=$started
    if [ "$kind" = subscribed ]; then subscribe=(--subscribe 'iot-2/cmd/+/fmt/+'); fi
    sleep 2
    start=$(rss_kib "$pid")
    # shellcheck disable=SC2086
    if ! $LOAD hold "${args[@]}" --sni acme.messaging.localhost $tls_client --server-pid "$pid" \
        -n "$size" --hold-seconds 5 --closed-seconds 0 "${subscribe[@]}" --json > "$work/hold.json" 2>> "$out/stderr.log"; then
        echo "side-by-side: $server memory $size $kind (round $round) failed; see $out/stderr.log" >&2
        tail -n 3 "$out/stderr.log" >&2
    fi
    sleep 5
    after_close=$(rss_kib "$pid")
    stop "$pid"
    python3 -c 'import json, sys
held = open(sys.argv[1]).read().strip()
json.dump({"hold": json.loads(held) if held else None, "rss_start_kib": int(sys.argv[2]),
           "rss_5s_after_close_kib": int(sys.argv[3])}, open(sys.argv[4], "w"))' \
        "$work/hold.json" "$start" "$after_close" "$out/$server.memory-$size-$kind.$round.json"
}
if wanted memory; then
    servers=(portcullis ${BASE_BIN:+base} mosquitto)
    for size in $HOLD_SIZES; do
        for kind in idle subscribed; do
            for round in $(seq 1 "$MEMORY_ROUNDS"); do
                echo "memory: $size sessions $kind, round $round/$MEMORY_ROUNDS" >&2
                for server in "${servers[@]}"; do memory "$server" "$size" "$kind" "$round"; done
            done
        done
    done
fi
long_lived=false
for label in hold connect known resume flood rate; do wanted "$label" && long_lived=true; done
if [ "$long_lived" = false ]; then
    report
    exit 0
fi

# Every load connection comes from 127.0.0.1: the per-source cap is lifted.
start_portcullis portcullis "$PORTCULLIS" 28883 28080 \
    PORTCULLIS__MQTTS__MAX_CONNECTIONS_PER_SOURCE=1000000
portcullis_pid=$started
# BASE_BIN: an earlier build of portcullis, measured beside this one in the same rounds ("base");
# BASE_ENV: settings for it (e.g. the per-source cap, for a build that has one).
if [ -n "${BASE_BIN:-}" ]; then
    # shellcheck disable=SC2086
    start_portcullis base "$BASE_BIN" 28983 28180 ${BASE_ENV:-}
    base_pid=$started
fi
start_mosquitto mosquitto 28884
mosquitto_pid=$started

# The embedded broker alone (plain TCP, MQTT 5): the forwarding overhead's baseline.
$LOAD broker --listeners 4 > "$work/broker.json" &
broker_pid=$!
pids+=("$broker_pid")
for _ in $(seq 100); do [ -s "$work/broker.json" ] && break; sleep 0.1; done
field() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(d[sys.argv[2]] if not isinstance(d[sys.argv[2]], list) else ','.join(map(str, d[sys.argv[2]])))" "$work/broker.json" "$1"; }
sleep 0.5

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
    wanted "$label" || return 0
    next=$((next + 100000))
    if ! $LOAD "$mode" "$@" --first-index $next --json > "$out/$server.$label.$round.json" \
        2>> "$out/stderr.log"; then
        echo "side-by-side: $server $label (round $round) failed; see $out/stderr.log" >&2
        tail -n 3 "$out/stderr.log" >&2
    fi
}

# The hold run first, on servers that have not held sessions yet.
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

report
