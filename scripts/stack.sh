#!/usr/bin/env bash
# The three services as background processes (`python -m shared.run`, nameko's runner with
# a bounded graceful stop), on top of scripts/infra.sh.
#   scripts/stack.sh up     infrastructure + otp, push, audit, gateway; returns once /readyz is 200
#   scripts/stack.sh down   stops the services and the infrastructure this project started
#   scripts/stack.sh env    prints the settings the services run with (secrets masked)
# Scale a service with OTP_INSTANCES=3 (likewise PUSH_INSTANCES; GATEWAY_INSTANCES needs
# distinct ports and is left to docker compose). MYCEPA_DATA moves the whole stack's
# state (pid files, logs, secrets) elsewhere, for a second stack beside this one.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=${MYCEPA_DATA:-$ROOT/.data}
RUN=$DATA/run
LOGS=$DATA/logs
VENV=${VENV:-$ROOT/.venv}
mkdir -p "$RUN" "$LOGS"

say() { printf '[stack] %s\n' "$*"; }
. scripts/lib.sh

# Secrets the services need, generated once into .data/mycepa.env unless the environment
# already has them. There is no built-in admin token.
load_env() {
  local file=$DATA/mycepa.env
  if [ ! -f "$file" ]; then
    umask 077
    {
      echo "MYCEPA_ADMIN_TOKEN=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(32))')"
      echo "OTP_ENCRYPTION_KEYS=$("$VENV/bin/python" -c 'from services.otp.totp import generate_key; print(generate_key())')"
    } > "$file"
    say "generated the admin token and the OTP encryption key into .data/mycepa.env"
  fi
  local line key
  while IFS= read -r line; do
    key=${line%%=*}
    [ -n "${!key:-}" ] || export "$line"
  done < "$file"
  export MYCEPA_ENV=${MYCEPA_ENV:-dev}
  export PYTHONUNBUFFERED=1
}

alive() { [ -f "$1" ] && running "$(cat "$1" 2>/dev/null)"; }

start_service() {  # start_service NAME INDEX
  local name=$1 index=$2 pidfile="$RUN/$1-$2.pid"
  if alive "$pidfile"; then return; fi
  # An instance that is still finishing its work after SIGTERM has given up its pid file
  # (shared/run.py) and its listening socket: its successor starts now, beside it.
  if alive "$pidfile.stopping"; then
    say "$name-$index (pid $(cat "$pidfile.stopping")) is still stopping; starting its successor"
  fi
  local workers=${MAX_WORKERS:-64}
  [ "$name" = audit ] && workers=${AUDIT_MAX_WORKERS:-64}
  MAX_WORKERS=$workers nohup "$VENV/bin/python" -m shared.run --config config/nameko.yaml --pidfile "$pidfile" \
    "services.$name.service" >> "$LOGS/$name-$index.log" 2>&1 &
  echo $! > "$pidfile"
}

wait_ready() {
  local url="http://${GATEWAY_BIND:-127.0.0.1:8000}/readyz"
  for _ in $(seq 1 120); do
    if "$VENV/bin/python" - "$url" <<'PY' 2>/dev/null
import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=3).status == 200 else 1)
PY
    then say "ready: $url"; return 0; fi
    for pidfile in "$RUN"/{otp,push,audit,gateway}-[0-9]*.pid; do
      [ -f "$pidfile" ] || continue
      if ! running "$(cat "$pidfile")"; then
        local log; log="$LOGS/$(basename "$pidfile" .pid).log"
        say "$(basename "$pidfile" .pid) exited; last lines of $log:"; tail -15 "$log" >&2; exit 1
      fi
    done
    sleep 0.5
  done
  say "the stack did not become ready within 60 s; logs are in ${LOGS#$ROOT/}/"; exit 1
}

stop_services() {  # SIGTERM to all, then wait: each finishes its work (at most 10 s) at once
  local pidfile pid pids=()
  for pidfile in "$RUN"/gateway-*.pid* "$RUN"/otp-*.pid* "$RUN"/push-*.pid* "$RUN"/audit-*.pid*; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if running "$pid"; then kill "$pid" 2>/dev/null || true; pids+=("$pid"); fi
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 120); do running "$pid" || break; sleep 0.1; done
    if running "$pid"; then kill -9 "$pid" 2>/dev/null || true; say "pid $pid did not stop within 12 s: killed"; fi
  done
  [ ${#pids[@]} -eq 0 ] || say "stopped ${#pids[@]} service process(es)"
  rm -f "$RUN"/gateway-*.pid* "$RUN"/otp-*.pid* "$RUN"/push-*.pid* "$RUN"/audit-*.pid*
}

case "${1:-}" in
  up)
    scripts/infra.sh up
    load_env
    for i in $(seq 1 "${OTP_INSTANCES:-1}"); do start_service otp "$i"; done
    for i in $(seq 1 "${PUSH_INSTANCES:-1}"); do start_service push "$i"; done
    start_service audit 1
    start_service gateway 1
    say "otp x${OTP_INSTANCES:-1}, push x${PUSH_INSTANCES:-1}, audit x1, gateway x1 started (logs: ${LOGS#$ROOT/}/)"
    wait_ready ;;
  down) stop_services; scripts/infra.sh down ;;
  stop-services) stop_services ;;
  env)
    load_env >&2
    if [ "${2:-}" = --raw ]; then  # for `source <(...)`: what scripts need to reach the stack
      env | grep -E '^(MYCEPA_|MONGO_|AMQP_|GATEWAY_)' | sed 's/^/export /'
    else
      env | grep -E '^(MYCEPA_|OTP_|MONGO_|AMQP_|GATEWAY_)' | sed -E 's/^((MYCEPA_ADMIN_TOKEN|OTP_ENCRYPTION_KEYS)=).*/\1***/'
    fi ;;
  *) echo "usage: $0 up|down|stop-services|env" >&2; exit 2 ;;
esac
