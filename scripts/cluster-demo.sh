#!/usr/bin/env bash
# Three Portcullis nodes on one PostgreSQL 15 and a 3-node NATS cluster (JetStream and MQTT), all
# on 127.0.0.1, from the configs in deploy/cluster/. It makes an org `acme` with a demo device CA,
# prints how to connect a device to one node and an application to another, and runs until
# Ctrl-C, when it stops everything and removes its temporary directory.
#
#   scripts/cluster-demo.sh            start, print how to connect, wait for Ctrl-C
#   scripts/cluster-demo.sh --check    start, publish through node 2 to a subscriber on node 3
#                                      (openssl s_client speaking MQTT 3.1.1), check the node
#                                      list, stop; exit 0 when all of it worked
#
# Needs: nats-server, PostgreSQL 15 (/usr/lib/postgresql/15/bin, or PORTCULLIS_PG_BIN), openssl,
# curl, python3. As root, PostgreSQL runs as the `postgres` user (it refuses root).
set -euo pipefail
cd "$(dirname "$0")/.."
check=""
[ "${1:-}" = "--check" ] && check=yes
deploy=deploy/cluster
pg_bin=${PORTCULLIS_PG_BIN:-/usr/lib/postgresql/15/bin}
for tool in nats-server openssl curl python3 "$pg_bin/initdb"; do
    command -v "$tool" >/dev/null || { echo "cluster-demo: $tool is needed" >&2; exit 2; }
done

work=$(mktemp -d /tmp/portcullis-cluster.XXXXXX)
chmod 755 "$work"
pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    as_postgres "$pg_bin/pg_ctl" -D "$work/pg" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap stop_all EXIT
trap 'exit 130' INT TERM
as_postgres() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
# wait_for WHAT LOG COMMAND...: retries COMMAND for up to 60 s; shows LOG's end if it never works.
wait_for() {
    local what=$1 log=$2
    shift 2
    for _ in $(seq 1 600); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "cluster-demo: $what did not come up:" >&2
    tail -n 20 "$log" >&2
    exit 1
}
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

cargo build --release --quiet --bin portcullis
bin=$PWD/target/release/portcullis

echo "PostgreSQL on 127.0.0.1:25432" >&2
mkdir -p "$work/pg"
[ "$(id -u)" = 0 ] && chown postgres: "$work/pg"
as_postgres "$pg_bin/initdb" -D "$work/pg" --auth=trust -U postgres -E UTF8 --locale=C >/dev/null
cat "$deploy/postgresql.conf" >> "$work/pg/postgresql.conf"
echo "unix_socket_directories = '$work/pg'" >> "$work/pg/postgresql.conf"
as_postgres "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/pg/log" -w start >/dev/null
"$pg_bin/psql" -q -h 127.0.0.1 -p 25432 -U postgres \
    -c "CREATE ROLE portcullis LOGIN" -c "CREATE DATABASE portcullis OWNER portcullis"

echo "NATS nodes: MQTT on 127.0.0.1:21881-21883" >&2
for i in 1 2 3; do
    # The node's config as deployed, with its JetStream store in the temporary directory.
    sed "s#/var/lib/nats-$i#$work/nats-$i#" "$deploy/nats-$i.conf" > "$work/nats-$i.conf"
    nats-server -c "$work/nats-$i.conf" > "$work/nats-$i.log" 2>&1 &
    pids+=($!)
done
for i in 1 2 3; do wait_for "NATS node $i" "$work/nats-$i.log" listening "2188$i"; done

# The same master key on every node; node 1 starts first and creates the shared state (platform
# CA, default server certificate, admin token), the others load it.
export PORTCULLIS_MASTER_KEY
PORTCULLIS_MASTER_KEY=$(openssl rand -hex 32)
for i in 1 2 3; do
    echo "Portcullis node-$i: MQTTS 127.0.0.1:2888$i, admin http://127.0.0.1:2808$i" >&2
    PORTCULLIS__STORE__DATA_DIR="$work/node$i" "$bin" serve --config "$deploy/node$i.toml" \
        > "$work/node$i.log" 2>&1 &
    pids+=($!)
    wait_for "node-$i" "$work/node$i.log" curl -fsS "http://127.0.0.1:2808$i/readyz"
done

token=$(cat "$work/node1/admin-token")
api() { # NODE PATH [curl args...]
    local node=$1 path=$2
    shift 2
    curl -fsS -H "Authorization: Bearer $token" "$@" "http://127.0.0.1:2808$node/api/v1$path"
}
# The org through node 1, its device CA through node 2: every node serves both.
api 1 /orgs -H 'content-type: application/json' -d '{"id": "acme", "name": "Acme Corp"}' >/dev/null
certs/make-demo-pki.sh >/dev/null
api 2 "/orgs/acme/ca-certificates?description=demo" -H 'content-type: application/x-pem-file' \
    --data-binary @certs/demo/ca.pem >/dev/null
# NATS elects its JetStream leaders after the nodes meet: until then it refuses sessions.
sleep 1

if [ -z "$check" ]; then
    cat <<TEXT

Three nodes are up (admin token: $work/node1/admin-token). The device and the application may
use any node: here the device publishes through node 2 and the application listens on node 3.

  echo '127.0.0.1 acme.messaging.localhost' | sudo tee -a /etc/hosts   # SNI names the org

  mosquitto_sub -h acme.messaging.localhost -p 28883 --cafile $work/node3/platform-ca.pem \\
      --cert certs/demo/a_dashboard.pem --key certs/demo/a_dashboard.key \\
      -i a:acme:dashboard -t 'iot-2/type/+/id/+/evt/+/fmt/+' -v &
  mosquitto_pub -h acme.messaging.localhost -p 28882 --cafile $work/node2/platform-ca.pem \\
      --cert certs/demo/d_sensor_dev1.pem --key certs/demo/d_sensor_dev1.key \\
      -i d:acme:sensor:dev1 -t iot-2/evt/temp/fmt/json -m '{"celsius": 21.5}'

  curl -s -H "Authorization: Bearer \$(cat $work/node1/admin-token)" \\
      http://127.0.0.1:28083/api/v1/cluster/nodes

Ctrl-C stops everything.
TEXT
    while true; do sleep 3600; done
fi

# --check: MQTT 3.1.1 spoken over openssl s_client, so that no /etc/hosts entry is needed for SNI.
mqtt_str() { printf '\\x%02x\\x%02x%s' $((${#1} / 256)) $((${#1} % 256)) "$1"; }
packet() { # TYPE BODY (printf escapes; the body is under 128 bytes)
    local body
    body=$(printf "$2" | wc -c)
    printf "\\x$1\\x$(printf %02x "$body")$2"
}
connect() { packet 10 "\\x00\\x04MQTT\\x04\\x02\\x00\\x3c$(mqtt_str "$1")"; }
session() { # NODE CERT-NAME: a TLS connection to node NODE with certs/demo/CERT-NAME
    timeout 10 openssl s_client -quiet -connect "127.0.0.1:2888$1" \
        -servername acme.messaging.localhost -CAfile "$work/node$1/platform-ca.pem" \
        -cert "certs/demo/$2.pem" -key "certs/demo/$2.key" 2>>"$work/s_client.log"
}
filter='iot-2/type/+/id/+/evt/+/fmt/+'
expected='iot-2/type/sensor/id/dev1/evt/temp/fmt/json{"celsius": 21.5}'
# One try: the application subscribes through node 3, the device publishes through node 2.
relayed() {
    { connect a:acme:dashboard; packet 82 "\\x00\\x01$(mqtt_str "$filter")\\x00"; sleep 9; } \
        | session 3 a_dashboard > "$work/received" &
    local sub=$!
    sleep 3
    { connect d:acme:sensor:dev1; packet 30 "$(mqtt_str iot-2/evt/temp/fmt/json){\"celsius\": 21.5}"; sleep 2; } \
        | session 2 d_sensor_dev1 > /dev/null || true
    wait "$sub" || true
    grep -aqF "$expected" "$work/received"
}
# A NATS cluster that has just formed may still be electing its JetStream leaders, and refuses
# MQTT sessions until then: a few tries.
for try in 1 2 3 4; do
    relayed && break
    if [ "$try" = 4 ]; then
        echo "cluster-demo: the application on node 3 did not receive the device's event from node 2" >&2
        od -c "$work/received" | head -n 20 >&2
        tail -n 5 "$work"/node*.log >&2
        exit 1
    fi
    sleep 2
done
nodes=$(api 3 /cluster/nodes | python3 -c 'import json,sys; print(sorted(n["node_id"] for n in json.load(sys.stdin)["items"] if n["status"] == "up"))')
[ "$nodes" = "['node-1', 'node-2', 'node-3']" ] || { echo "cluster-demo: nodes up: $nodes" >&2; exit 1; }
echo "cluster-demo: an event published through node 2 reached an application on node 3; nodes up: $nodes"
