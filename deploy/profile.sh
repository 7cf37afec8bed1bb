#!/usr/bin/env bash
# The production profile on one machine, from Debian's postgresql and redis-server (no Docker):
#
#   deploy/profile.sh up                 PostgreSQL, Redis, the MLflow tracking server, the Dagster code server,
#                                        webserver and daemon, and FUNDARB_CELERY_WORKERS Celery workers
#   deploy/profile.sh down               stop everything `up` started (by the pids it recorded), data kept
#   deploy/profile.sh status             which services run, and where
#   deploy/profile.sh restart SERVICE    stop and start one service (webserver, daemon, code_server, worker1 …)
#
# Every setting comes from the environment (defaults below); `make deploy-up` / `make deploy-down` call this.
# Secrets (FUNDARB_PG_PASSWORD, FUNDARB_REDIS_PASSWORD) are read from the environment; when unset, `up` generates
# them once into $FUNDARB_DEPLOY_DIR/secrets.env (mode 600) so later commands reuse them.  They are never printed,
# never on a command line (ps shows every argument), never in a log: PostgreSQL gets its password from a
# statement on its private socket, Redis its `requirepass` on stdin, the clients theirs from PGPASSWORD /
# REDISCLI_AUTH / the dagster.yaml `env:` entries / the broker URL in the environment.
# Run as root (CI), PostgreSQL runs as the `postgres` user: its data directory must be reachable by that user.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPLOY_DIR="$(mkdir -p "${FUNDARB_DEPLOY_DIR:-$REPO/data/deploy}" && cd "${FUNDARB_DEPLOY_DIR:-$REPO/data/deploy}" && pwd)"
BIN="$(cd "${FUNDARB_BIN:-$REPO/.venv/bin}" && pwd)"
RUN="$DEPLOY_DIR/run"
LOGS="$DEPLOY_DIR/logs"
PGDATA="$DEPLOY_DIR/postgres"
PG_BIN="${FUNDARB_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}"
mkdir -p "$RUN" "$LOGS"

log() { printf '[deploy] %s\n' "$*"; }
die() { printf '[deploy] error: %s\n' "$*" >&2; exit 1; }

# ----------------------------------------------------------------------------------------------- settings
load_settings() {
  if [[ -f "$DEPLOY_DIR/secrets.env" ]]; then  # the environment wins over the generated file
    local pg="${FUNDARB_PG_PASSWORD:-}" rd="${FUNDARB_REDIS_PASSWORD:-}"
    # shellcheck disable=SC1091
    set -a; source "$DEPLOY_DIR/secrets.env"; set +a
    FUNDARB_PG_PASSWORD="${pg:-${FUNDARB_PG_PASSWORD:-}}" FUNDARB_REDIS_PASSWORD="${rd:-${FUNDARB_REDIS_PASSWORD:-}}"
  fi
  export FUNDARB_PG_HOST="${FUNDARB_PG_HOST:-127.0.0.1}" FUNDARB_PG_PORT="${FUNDARB_PG_PORT:-55432}"
  export FUNDARB_PG_USER="${FUNDARB_PG_USER:-fundarb}" FUNDARB_PG_DAGSTER_DB="${FUNDARB_PG_DAGSTER_DB:-dagster}"
  export FUNDARB_PG_MLFLOW_DB="${FUNDARB_PG_MLFLOW_DB:-mlflow}"
  export FUNDARB_REDIS_HOST="${FUNDARB_REDIS_HOST:-127.0.0.1}" FUNDARB_REDIS_PORT="${FUNDARB_REDIS_PORT:-56379}"
  export FUNDARB_MLFLOW_PORT="${FUNDARB_MLFLOW_PORT:-55000}" FUNDARB_DAGSTER_PORT="${FUNDARB_DAGSTER_PORT:-53000}"
  export FUNDARB_CODE_SERVER_PORT="${FUNDARB_CODE_SERVER_PORT:-54000}"
  export FUNDARB_CELERY_WORKERS="${FUNDARB_CELERY_WORKERS:-2}" FUNDARB_CELERY_CONCURRENCY="${FUNDARB_CELERY_CONCURRENCY:-1}"
  export FUNDARB_DUCKDB="${FUNDARB_DUCKDB:-$REPO/data/fundarb.duckdb}" FUNDARB_SOURCE="${FUNDARB_SOURCE:-replay}"
  export FUNDARB_MLFLOW_ARTIFACTS="${FUNDARB_MLFLOW_ARTIFACTS:-$DEPLOY_DIR/mlflow-artifacts}"
  export DAGSTER_HOME="$DEPLOY_DIR/dagster_home"
  export MLFLOW_TRACKING_URI="http://127.0.0.1:$FUNDARB_MLFLOW_PORT"
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
  if [[ -z "${FUNDARB_PG_PASSWORD:-}" || -z "${FUNDARB_REDIS_PASSWORD:-}" ]]; then
    [[ "${1:-}" == generate ]] || die "FUNDARB_PG_PASSWORD / FUNDARB_REDIS_PASSWORD unset and no $DEPLOY_DIR/secrets.env"
    (umask 077; {
      [[ -n "${FUNDARB_PG_PASSWORD:-}" ]] || printf 'FUNDARB_PG_PASSWORD=%s\n' "$("$BIN/python" -c 'import secrets; print(secrets.token_hex(24))')"
      [[ -n "${FUNDARB_REDIS_PASSWORD:-}" ]] || printf 'FUNDARB_REDIS_PASSWORD=%s\n' "$("$BIN/python" -c 'import secrets; print(secrets.token_hex(24))')"
    } >> "$DEPLOY_DIR/secrets.env")
    log "generated the missing passwords into $DEPLOY_DIR/secrets.env (mode 600)"
    set -a; source "$DEPLOY_DIR/secrets.env"; set +a
  fi
  export FUNDARB_PG_PASSWORD FUNDARB_REDIS_PASSWORD
  # The broker URLs hold the Redis password: environment only; Dagster reads them through `{"env": ...}`.
  export FUNDARB_CELERY_BROKER_URL="redis://:$FUNDARB_REDIS_PASSWORD@$FUNDARB_REDIS_HOST:$FUNDARB_REDIS_PORT/0"
  export FUNDARB_CELERY_BACKEND_URL="redis://:$FUNDARB_REDIS_PASSWORD@$FUNDARB_REDIS_HOST:$FUNDARB_REDIS_PORT/1"
}

write_profile_env() {  # what a shell needs to use the profile (`set -a; source …/profile.env`): no secret in it
  {
    for v in FUNDARB_PG_HOST FUNDARB_PG_PORT FUNDARB_PG_USER FUNDARB_PG_DAGSTER_DB FUNDARB_PG_MLFLOW_DB \
             FUNDARB_REDIS_HOST FUNDARB_REDIS_PORT FUNDARB_MLFLOW_PORT FUNDARB_DAGSTER_PORT FUNDARB_CODE_SERVER_PORT \
             FUNDARB_DUCKDB FUNDARB_SOURCE DAGSTER_HOME MLFLOW_TRACKING_URI; do
      printf '%s=%q\n' "$v" "${!v}"
    done
    printf '# passwords and broker URLs: %s/secrets.env, or your own environment\n' "$DEPLOY_DIR"
  } > "$DEPLOY_DIR/profile.env"
}

# ----------------------------------------------------------------------------------------------- processes
pid_of() { [[ -f "$RUN/$1.pid" ]] && cat "$RUN/$1.pid"; }
alive() { local p; p="$(pid_of "$1" || true)"; [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null; }

start_bg() {  # start_bg NAME CMD…: own session (pid = process group), output to logs/NAME.log, pid recorded
  local name="$1"; shift
  if alive "$name"; then log "$name already running (pid $(pid_of "$name"))"; return; fi
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! > "$RUN/$name.pid"
}

stop_bg() {  # signal the process group we started (INT: Dagster's clean exit, TERM: Celery's warm shutdown),
  local name="$1" p sig=INT t0=$SECONDS               # wait up to 30 s, then KILL it
  p="$(pid_of "$name" || true)"
  if [[ -z "$p" ]] || ! kill -0 "$p" 2>/dev/null; then rm -f "$RUN/$name.pid"; return; fi
  local patience=300  # tenths of a second
  [[ "$name" == worker* ]] && sig=TERM
  # the gRPC code server holds no state but waits out its clients' open calls for a minute: 5 s, then KILL
  [[ "$name" == code_server ]] && patience=50
  kill -"$sig" -- "-$p" 2>/dev/null || kill -"$sig" "$p" 2>/dev/null || true
  for _ in $(seq "$patience"); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && { kill -KILL -- "-$p" 2>/dev/null || true; log "$name killed after $((patience / 10)) s"; }
  rm -f "$RUN/$name.pid"
  log "$name stopped ($((SECONDS - t0)) s)"
}

wait_for() {  # wait_for WHAT SECONDS CMD… (gives up at once when the service named by WAIT_SVC has exited)
  local what="$1" secs="$2"; shift 2
  for _ in $(seq $((secs * 2))); do
    "$@" >/dev/null 2>&1 && { log "$what ready"; return; }
    if [[ -n "${WAIT_SVC:-}" ]] && ! alive "$WAIT_SVC"; then die "$what: $WAIT_SVC exited (see $LOGS/$WAIT_SVC.log)"; fi
    sleep 0.5
  done
  die "$what not ready after ${secs}s (logs in $LOGS)"
}

# ----------------------------------------------------------------------------------------------- PostgreSQL
as_pg() { if [[ "$(id -u)" == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

pg_up() {
  [[ -x "$PG_BIN/initdb" ]] || die "PostgreSQL not found (apt-get install -y postgresql)"
  if [[ ! -f "$PGDATA/PG_VERSION" ]]; then
    mkdir -p "$PGDATA"; chmod 700 "$PGDATA"
    [[ "$(id -u)" == 0 ]] && chown postgres:postgres "$PGDATA"
    as_pg test -w "$PGDATA" || die "the postgres user cannot write $PGDATA: set FUNDARB_DEPLOY_DIR to a path it can reach"
    # trust on the private socket (in PGDATA, mode 700) only; TCP needs the password set just below
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -U "$FUNDARB_PG_USER" -E UTF8 --locale=C \
      --auth-local=trust --auth-host=scram-sha-256 >"$LOGS/initdb.log" 2>&1
    cat >> "$PGDATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $FUNDARB_PG_PORT
unix_socket_directories = '$PGDATA'
log_statement = 'none'
EOF
    local fresh=1
  fi
  if ! as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 60 start >/dev/null
  fi
  local sql=(as_pg "$PG_BIN/psql" -h "$PGDATA" -p "$FUNDARB_PG_PORT" -U "$FUNDARB_PG_USER" -d postgres -qtA -v ON_ERROR_STOP=1)
  # the password goes in on stdin (never argv), every `up`: an exported FUNDARB_PG_PASSWORD takes effect
  printf "ALTER ROLE \"%s\" PASSWORD '%s';\n" "$FUNDARB_PG_USER" "${FUNDARB_PG_PASSWORD//\'/\'\'}" | "${sql[@]}" >/dev/null
  for db in "$FUNDARB_PG_DAGSTER_DB" "$FUNDARB_PG_MLFLOW_DB"; do
    [[ -n "$("${sql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]] || "${sql[@]}" -c "CREATE DATABASE \"$db\"" >/dev/null
  done
  log "postgresql ready on 127.0.0.1:$FUNDARB_PG_PORT${fresh:+ (new cluster in $PGDATA)}"
}

pg_down() {
  if [[ -f "$PGDATA/postmaster.pid" ]]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null && log "postgresql stopped"
  fi
}

# ----------------------------------------------------------------------------------------------- Redis
redis_up() {
  command -v redis-server >/dev/null || die "redis-server not found (apt-get install -y redis-server)"
  mkdir -p "$DEPLOY_DIR/redis"
  if ! alive redis; then
    rm -f "$RUN/redis.pid"
    # config on stdin: `requirepass` never appears on a command line or on disk
    printf 'port %s\nbind 127.0.0.1\nprotected-mode yes\nrequirepass "%s"\ndaemonize yes\npidfile %s\ndir %s\nlogfile %s\nappendonly yes\nsave ""\n' \
      "$FUNDARB_REDIS_PORT" "$FUNDARB_REDIS_PASSWORD" "$RUN/redis.pid" "$DEPLOY_DIR/redis" "$LOGS/redis.log" \
      | redis-server -
  fi
  REDISCLI_AUTH="$FUNDARB_REDIS_PASSWORD" wait_for "redis on 127.0.0.1:$FUNDARB_REDIS_PORT" 30 \
    redis-cli -h 127.0.0.1 -p "$FUNDARB_REDIS_PORT" ping
}

# ----------------------------------------------------------------------------------------------- MLflow
mlflow_up() {
  mkdir -p "$FUNDARB_MLFLOW_ARTIFACTS"
  # the backend URI has no password: psycopg2 (libpq) takes it from PGPASSWORD, set for this process only
  # no GenAI job runner (scorers, trace roll-ups): one process fewer, and it held shutdown up for 20 s
  PGPASSWORD="$FUNDARB_PG_PASSWORD" MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
  MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://$FUNDARB_PG_USER@$FUNDARB_PG_HOST:$FUNDARB_PG_PORT/$FUNDARB_PG_MLFLOW_DB" \
    start_bg mlflow "$BIN/mlflow" server --host 127.0.0.1 --port "$FUNDARB_MLFLOW_PORT" --workers 1 \
      --serve-artifacts --artifacts-destination "$FUNDARB_MLFLOW_ARTIFACTS"
}

# ----------------------------------------------------------------------------------------------- Dagster
dagster_files() {
  mkdir -p "$DAGSTER_HOME"
  cp "$REPO/deploy/dagster.yaml" "$DAGSTER_HOME/dagster.yaml"
  cat > "$DEPLOY_DIR/workspace.yaml" <<EOF
# written by deploy/profile.sh: the webserver and the daemon load the code server's definitions over gRPC
load_from:
  - grpc_server:
      host: 127.0.0.1
      port: $FUNDARB_CODE_SERVER_PORT
      location_name: fundarb
EOF
}

code_server_up() {
  start_bg code_server "$BIN/dagster" api grpc -h 127.0.0.1 -p "$FUNDARB_CODE_SERVER_PORT" \
    -m fundarb_pipelines.production -d "$REPO" --location-name fundarb
}
webserver_up() {
  start_bg webserver "$BIN/dagster-webserver" -h 127.0.0.1 -p "$FUNDARB_DAGSTER_PORT" -w "$DEPLOY_DIR/workspace.yaml"
}
daemon_up() { start_bg daemon "$BIN/dagster-daemon" run -w "$DEPLOY_DIR/workspace.yaml"; }
worker_up() {  # worker_up N: one Celery worker on the `dagster` queue, FUNDARB_CELERY_CONCURRENCY processes
  alive "worker$1" || : > "$LOGS/worker$1.log"  # a fresh log: readiness is its " ready." line
  start_bg "worker$1" "$BIN/celery" -A fundarb_pipelines.celery_worker worker -Q dagster -n "fundarb$1@%h" \
    --concurrency "$FUNDARB_CELERY_CONCURRENCY" --prefetch-multiplier 1 --loglevel INFO
}
workers() { ls "$RUN" 2>/dev/null | sed -n 's/^\(worker[0-9]*\)\.pid$/\1/p'; }

wait_dagster() {
  wait_for "dagster code server on 127.0.0.1:$FUNDARB_CODE_SERVER_PORT" 180 \
    "$BIN/dagster" api grpc-health-check -h 127.0.0.1 -p "$FUNDARB_CODE_SERVER_PORT"
  wait_for "dagster webserver on http://127.0.0.1:$FUNDARB_DAGSTER_PORT" 180 \
    curl -sf "http://127.0.0.1:$FUNDARB_DAGSTER_PORT/server_info"
}
wait_worker() { WAIT_SVC="$1" wait_for "celery $1" 180 grep -q " ready\." "$LOGS/$1.log"; }

service_up() {
  case "$1" in
    webserver) webserver_up; WAIT_SVC=webserver wait_for "dagster webserver" 180 curl -sf "http://127.0.0.1:$FUNDARB_DAGSTER_PORT/server_info" ;;
    daemon) daemon_up ;;
    code_server) code_server_up; wait_dagster ;;
    mlflow) mlflow_up; wait_for "mlflow" 180 curl -sf "$MLFLOW_TRACKING_URI/health" ;;
    worker*) worker_up "${1#worker}"; wait_worker "$1" ;;
    *) die "unknown service $1" ;;
  esac
}

# ----------------------------------------------------------------------------------------------- commands
cmd_up() {
  load_settings generate
  write_profile_env
  pg_up
  redis_up
  dagster_files
  : > "$LOGS/.started"
  # the Python services import for seconds each: start them together, then wait
  mlflow_up
  code_server_up
  for i in $(seq "$FUNDARB_CELERY_WORKERS"); do worker_up "$i"; done
  WAIT_SVC=code_server wait_for "dagster code server on 127.0.0.1:$FUNDARB_CODE_SERVER_PORT" 180 \
    "$BIN/dagster" api grpc-health-check -h 127.0.0.1 -p "$FUNDARB_CODE_SERVER_PORT"
  webserver_up
  daemon_up
  WAIT_SVC=mlflow wait_for "mlflow tracking server on $MLFLOW_TRACKING_URI" 180 curl -sf "$MLFLOW_TRACKING_URI/health"
  WAIT_SVC=webserver wait_for "dagster webserver on http://127.0.0.1:$FUNDARB_DAGSTER_PORT" 180 \
    curl -sf "http://127.0.0.1:$FUNDARB_DAGSTER_PORT/server_info"
  for w in $(seq "$FUNDARB_CELERY_WORKERS"); do wait_worker "worker$w"; done
  alive daemon || die "dagster daemon exited (see $LOGS/daemon.log)"
  log "up: Dagster UI http://127.0.0.1:$FUNDARB_DAGSTER_PORT, MLflow $MLFLOW_TRACKING_URI, $FUNDARB_CELERY_WORKERS Celery workers"
  log "environment for other shells: set -a; source $DEPLOY_DIR/profile.env; source $DEPLOY_DIR/secrets.env; set +a"
}

cmd_down() {
  stop_bg daemon  # first: no new run starts while the rest goes down
  for s in webserver code_server $(workers) mlflow; do stop_bg "$s" & done
  wait
  if alive redis; then
    local p; p="$(pid_of redis)"; kill -TERM "$p"
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    rm -f "$RUN/redis.pid"; log "redis stopped"
  fi
  pg_down
  log "down (data kept in $DEPLOY_DIR)"
}

cmd_status() {
  for s in postgres redis mlflow code_server webserver daemon $(ls "$RUN" 2>/dev/null | sed -n 's/^\(worker[0-9]*\)\.pid$/\1/p'); do
    if [[ "$s" == postgres ]]; then
      if as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then echo "postgres  running"; else echo "postgres  stopped"; fi
    elif alive "$s"; then echo "$s  running (pid $(pid_of "$s"))"; else echo "$s  stopped"; fi
  done
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  restart) [[ -n "${2:-}" ]] || die "restart which service?"; load_settings; stop_bg "$2"; service_up "$2" ;;
  *) echo "usage: $0 up|down|status|restart SERVICE" >&2; exit 2 ;;
esac
