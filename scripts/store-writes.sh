#!/bin/bash
# What the PostgreSQL store costs per connection (BENCHMARKS.md, "Cluster-wide sessions, events
# and registry"): one node of BIN on a fresh database of a PostgreSQL 15 of this script's own
# (loopback, fsync off; started on first use in /tmp/portcullis-store-writes and left running),
# 20,000 new devices by the load tool, one JSON line: PostgreSQL's CPU (its processes'
# /proc/<pid>/stat) and transactions (pg_stat_database) for the run, the node's CPU per connection,
# what was dropped. Run it for two binaries in turn, several times: the ratios are the result.
#
#   cargo build --release --bins
#   scripts/store-writes.sh target/release/portcullis now
#
# As root, PostgreSQL runs as the `postgres` user (it refuses root). Needs curl, python3, psql and
# the demo CA (certs/make-demo-pki.sh).
set -eu
BIN=$(realpath "$1"); LABEL=$2
REPO=$(cd "$(dirname "$0")/.." && pwd)
LOAD=${LOAD:-$REPO/target/release/portcullis-load}
PGBIN=${PORTCULLIS_PG_BIN:-/usr/lib/postgresql/15/bin}
PGDIR=/tmp/portcullis-store-writes; PORT=${PG_PORT:-55432}
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ ! -d $PGDIR/data ]; then
  mkdir -p $PGDIR
  [ "$(id -u)" = 0 ] && chown postgres:postgres $PGDIR
  as_pg $PGBIN/initdb -D $PGDIR/data --auth=trust -U postgres -E UTF8 --locale=C --no-sync >/dev/null
  printf "port = %s\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nmax_connections = 300\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n" \
    "$PORT" "$PGDIR" >> $PGDIR/data/postgresql.conf
fi
as_pg $PGBIN/pg_ctl -D $PGDIR/data status >/dev/null || as_pg $PGBIN/pg_ctl -D $PGDIR/data -l $PGDIR/log -w start >/dev/null
DB=m_${LABEL}_$RANDOM
as_pg $PGBIN/createdb -h 127.0.0.1 -p $PORT -U postgres "$DB"
sql() { psql -h 127.0.0.1 -p $PORT -U postgres -d "$DB" -Atc "$1"; }
W=$(mktemp -d); cd "$W"
PORTCULLIS__STORE__URL=postgres://postgres@127.0.0.1:$PORT/$DB \
  PORTCULLIS__MQTTS__LISTEN=127.0.0.1:18883 PORTCULLIS__ADMIN__LISTEN=127.0.0.1:18080 \
  PORTCULLIS__MQTTS__MAX_CONNECTIONS_PER_SOURCE=1000000 RUST_LOG=warn,rumqttd=off \
  "$BIN" serve > node.log 2>&1 &
NODE=$!
trap 'kill $NODE 2>/dev/null; cd /; rm -rf "$W"' EXIT
for _ in $(seq 1 100); do
  [ -f data/admin-token ] && curl -sf http://127.0.0.1:18080/readyz >/dev/null && break
  sleep 0.2
done
TOKEN=$(cat data/admin-token)
curl -sf -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  -d '{"id": "acme", "name": "acme"}' http://127.0.0.1:18080/api/v1/orgs >/dev/null
curl -sf -H "Authorization: Bearer $TOKEN" -H 'content-type: application/x-pem-file' \
  --data-binary @"$REPO/certs/demo/ca.pem" \
  'http://127.0.0.1:18080/api/v1/orgs/acme/ca-certificates?description=load' >/dev/null
sleep 2
pg_ticks() {
  local total=0
  for pid in $(pgrep -u postgres -x postgres); do
    read -r -a stat < /proc/$pid/stat || continue
    total=$((total + stat[13] + stat[14]))
  done
  echo $total
}
C0=$(pg_ticks); X0=$(sql "SELECT xact_commit FROM pg_stat_database WHERE datname = '$DB'")
"$LOAD" connect --port 18883 --sni acme.messaging.localhost --ca data/platform-ca.pem \
  --client-ca-cert "$REPO/certs/demo/ca.pem" --client-ca-key "$REPO/certs/demo/ca.key" \
  -n 20000 -t 32 --server-pid $NODE --json > load.json 2>/dev/null
sleep 4
C1=$(pg_ticks); X1=$(sql "SELECT xact_commit FROM pg_stat_database WHERE datname = '$DB'")
DEVICES=$(sql "SELECT count(*) FROM devices")
LIVE=$(sql "SELECT count(*) FROM live_sessions" 2>/dev/null || echo none)
DROPPED=$(curl -s http://127.0.0.1:18080/metrics \
  | grep -E '^portcullis_(devices_dropped|cluster_news_dropped)_total' | tr '\n' ' ')
TICKS=$(getconf CLK_TCK 2>/dev/null || echo 100)
python3 - "$LABEL" "$((C1 - C0))" "$TICKS" "$((X1 - X0))" "$DEVICES" "$LIVE" "$DROPPED" <<'PY'
import json, sys
label, ticks, hz, xacts, devices, live, dropped = sys.argv[1:]
load = json.load(open("load.json"))
ok = load.get("ok") or 1
print(json.dumps({
    "label": label,
    "pg_cpu_us_per_connection": round(int(ticks) / int(hz) * 1e6 / ok, 1),
    "pg_transactions": int(xacts),
    "node_cpu_us_per_connection": (load.get("server") or {}).get("cpu_us_per_connection"),
    "connections_per_second": load.get("connections_per_second"),
    "ok": load.get("ok"),
    "devices_rows": int(devices),
    "live_sessions_rows_after": live,
    "dropped": dropped.strip(),
}))
PY
