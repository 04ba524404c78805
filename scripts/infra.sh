#!/usr/bin/env bash
# Local infrastructure on 127.0.0.1: RabbitMQ (Debian's rabbitmq-server) and FerretDB v1
# (MongoDB wire protocol, SQLite backend). Idempotent: a server already answering is kept.
# With AMQP_URI / MONGO_URL set, those servers are used and nothing is started here.
#   scripts/infra.sh up | down | status
#   scripts/infra.sh start|stop rabbitmq|mongo     one server (fault injection: make chaos)
# A second, private pair (the fault tests, make chaos) runs beside the first with its own
# MYCEPA_DATA, RABBIT_PORT, RABBIT_MGMT_PORT, RABBIT_DIST_PORT, RABBITMQ_NODENAME, MONGO_PORT,
# MONGO_DEBUG_PORT (FerretDB's Prometheus metrics at /debug/metrics: its commands per kind).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=${MYCEPA_DATA:-$ROOT/.data}
LOGS=$DATA/logs
RUN=$DATA/run
FERRETDB_VERSION=v1.24.2
FERRETDB_BIN=$ROOT/.cache/bin/ferretdb-$FERRETDB_VERSION-idfix
RABBIT_HOME=$DATA/rabbitmq
RABBIT_PORT=${RABBIT_PORT:-5672}
RABBIT_MGMT_PORT=${RABBIT_MGMT_PORT:-15672}
RABBIT_DIST_PORT=${RABBIT_DIST_PORT:-25672}
MONGO_PORT=${MONGO_PORT:-27017}
MONGO_DEBUG_PORT=${MONGO_DEBUG_PORT:-28017}
export RABBITMQ_NODENAME=${RABBITMQ_NODENAME:-mycepa@localhost}
mkdir -p "$LOGS" "$RUN"

say() { printf '[infra] %s\n' "$*"; }
. scripts/lib.sh
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

rabbit_env() {
  env HOME="$RABBIT_HOME" RABBITMQ_NODENAME="$RABBITMQ_NODENAME" \
    RABBITMQ_MNESIA_BASE="$RABBIT_HOME/mnesia" RABBITMQ_LOG_BASE="$LOGS" \
    RABBITMQ_CONFIG_FILE="$RABBIT_HOME/rabbitmq.conf" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$RABBIT_HOME/enabled_plugins" \
    RABBITMQ_PID_FILE="$RUN/rabbitmq.pid" \
    RABBITMQ_DIST_PORT="$RABBIT_DIST_PORT" ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_SERVER_START_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" "$@"
}

install_rabbitmq() {
  [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] && return
  if [ "$(id -u)" != 0 ]; then
    say "RabbitMQ is not installed. Install it with: sudo apt-get install -y rabbitmq-server"
    say "(or point AMQP_URI at a running broker)"; exit 1
  fi
  say "installing Debian's rabbitmq-server (once)..."
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  # The package may start a system-wide broker; ours runs from the project's directory.
  service rabbitmq-server stop >/dev/null 2>&1 || true
}

rabbit_up() {
  if [ -n "${AMQP_URI:-}" ]; then say "RabbitMQ: using AMQP_URI"; return; fi
  if listening "$RABBIT_PORT"; then say "RabbitMQ: already answering on 127.0.0.1:$RABBIT_PORT"; return; fi
  install_rabbitmq
  mkdir -p "$RABBIT_HOME"
  cat > "$RABBIT_HOME/rabbitmq.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:$RABBIT_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $RABBIT_MGMT_PORT
CONF
  # The management API is what nameko's test fixtures use to make a vhost per test.
  echo "[rabbitmq_management]." > "$RABBIT_HOME/enabled_plugins"
  # The node and rabbitmqctl must share a cookie; made here so neither races to create it.
  if [ ! -f "$RABBIT_HOME/.erlang.cookie" ]; then
    (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$RABBIT_HOME/.erlang.cookie")
    chmod 400 "$RABBIT_HOME/.erlang.cookie"
  fi
  say "starting RabbitMQ (logs: ${LOGS#$ROOT/}/rabbitmq.out)..."
  # The node writes its own pid (the Erlang VM's, not this shell's) to RABBITMQ_PID_FILE.
  rm -f "$RUN/rabbitmq.pid"
  rabbit_env nohup /usr/lib/rabbitmq/bin/rabbitmq-server > "$LOGS/rabbitmq.out" 2>&1 &
  local launcher=$!
  # await_startup fails at once until the node has registered with epmd: retry while it lives.
  local started=""
  for _ in $(seq 1 90); do
    if rabbit_env /usr/lib/rabbitmq/bin/rabbitmqctl -q await_startup --timeout 60 >/dev/null 2>&1; then
      started=yes; break
    fi
    running "$launcher" || break
    sleep 1
  done
  if [ -z "$started" ]; then
    say "RabbitMQ did not start; see .data/logs/rabbitmq.out"; tail -20 "$LOGS/rabbitmq.out" || true; exit 1
  fi
  for _ in $(seq 1 60); do listening "$RABBIT_MGMT_PORT" && break; sleep 0.5; done
  say "RabbitMQ: up on 127.0.0.1:$RABBIT_PORT (management 127.0.0.1:$RABBIT_MGMT_PORT)"
}

build_ferretdb() {
  [ -x "$FERRETDB_BIN" ] && return
  command -v go >/dev/null || { say "Go is needed to build FerretDB once: apt-get install golang (or set MONGO_URL)"; exit 1; }
  say "building FerretDB $FERRETDB_VERSION from the Go module proxy (once, about a minute)..."
  # A plain `go install` binary panics at start because the module has no
  # build/version/version.txt; FerretDB's own message says to write that file. So build
  # from the module source with the file in place, which keeps `go install`'s inputs.
  local src tmp
  src=$(go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  tmp=$(mktemp -d)
  cp -r "$src"/. "$tmp"/ && chmod -R u+w "$tmp"
  echo "$FERRETDB_VERSION" > "$tmp/build/version/version.txt"
  # Upstream bug in v1.24.2's SQLite backend: the unique _id index is created on
  # `_ferretdb_sjson->"_id"` but queries filter on `_ferretdb_sjson->'$._id'`. SQLite uses
  # an expression index only for the same expression, so every lookup by _id scanned the
  # whole table (10 ms at 5,000 documents, growing with every user). Filter on the indexed
  # expression instead; both extract the same JSON value.
  local metadata="$tmp/internal/backends/sqlite/metadata/metadata.go"
  python3 - "$metadata" <<'PY' || { say "FerretDB source changed: review the _id index patch"; exit 1; }
import sys
path = sys.argv[1]
source = open(path).read()
old = "IDColumn = DefaultColumn + " + '"' + "->'$._id'" + '"'  # the Go line: "->'$._id'"
if old not in source:
    sys.exit(1)
open(path, "w").write(source.replace(old, "IDColumn = DefaultColumn + `->" + '"_id"' + "`"))
PY
  mkdir -p "$(dirname "$FERRETDB_BIN")"
  (cd "$tmp" && GOFLAGS=-mod=mod go build -trimpath -o "$FERRETDB_BIN" ./cmd/ferretdb)
  rm -rf "$tmp"
}

ferret_up() {
  if [ -n "${MONGO_URL:-}" ]; then say "MongoDB: using MONGO_URL"; return; fi
  if listening "$MONGO_PORT"; then say "MongoDB wire server: already answering on 127.0.0.1:$MONGO_PORT"; return; fi
  build_ferretdb
  mkdir -p "$DATA/ferretdb"
  # The metrics are for people and the benchmark: a taken port must not stop the database.
  if listening "$MONGO_DEBUG_PORT"; then
    say "FerretDB metrics: 127.0.0.1:$MONGO_DEBUG_PORT is taken, serving them on a free port"; MONGO_DEBUG_PORT=0
  fi
  nohup "$FERRETDB_BIN" --handler=sqlite --sqlite-url="file:$DATA/ferretdb/" --state-dir="$DATA/ferretdb" \
    --listen-addr="127.0.0.1:$MONGO_PORT" --debug-addr=127.0.0.1:$MONGO_DEBUG_PORT --telemetry=disable --log-level=WARN \
    >> "$LOGS/ferretdb.log" 2>&1 &
  echo $! > "$RUN/ferretdb.pid"
  for _ in $(seq 1 100); do listening "$MONGO_PORT" && break; sleep 0.1; done
  listening "$MONGO_PORT" || { say "FerretDB did not start; see ${LOGS#$ROOT/}/ferretdb.log"; exit 1; }
  say "FerretDB $FERRETDB_VERSION: up on 127.0.0.1:$MONGO_PORT (data: ${DATA#$ROOT/}/ferretdb)"
}

stop_pid() {  # stop_pid NAME: the process we started, by its pid file
  local file="$RUN/$1.pid"
  [ -f "$file" ] || return 0
  local pid; pid=$(cat "$file")
  if running "$pid"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do running "$pid" || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

rabbit_down() {
  [ -f "$RUN/rabbitmq.pid" ] || return 0
  # SIGTERM to the node's own pid is a clean shutdown; stop_pid waits for it to end.
  stop_pid rabbitmq
  say "RabbitMQ: stopped"
}

ferret_down() {
  if [ -f "$RUN/ferretdb.pid" ]; then stop_pid ferretdb; say "FerretDB: stopped"; fi
}

down() {
  local ours=""; [ -f "$RUN/rabbitmq.pid" ] && ours=yes
  rabbit_down
  # The node started Erlang's port mapper as a daemon; it refuses to die while any
  # other Erlang node is registered, so this only ends what our broker left behind.
  if [ -n "$ours" ] && command -v epmd >/dev/null; then ERL_EPMD_ADDRESS=127.0.0.1 epmd -kill >/dev/null 2>&1 || true; fi
  ferret_down
}

server() {  # server start|stop rabbitmq|mongo
  case "$1:${2:-}" in
    start:rabbitmq) rabbit_up ;; stop:rabbitmq) rabbit_down ;;
    start:mongo) ferret_up ;; stop:mongo) ferret_down ;;
    *) echo "usage: $0 start|stop rabbitmq|mongo" >&2; exit 2 ;;
  esac
}

case "${1:-}" in
  up) rabbit_up; ferret_up ;;
  down) down ;;
  start|stop) server "$1" "${2:-}" ;;
  status)
    listening "$RABBIT_PORT" && say "RabbitMQ: answering" || say "RabbitMQ: down"
    listening "$MONGO_PORT" && say "MongoDB wire server: answering" || say "MongoDB wire server: down" ;;
  build-ferretdb) build_ferretdb ;;
  *) echo "usage: $0 up|down|status|start|stop|build-ferretdb" >&2; exit 2 ;;
esac
