#!/bin/sh
# conveyor's image: one image for every role, chosen by the first argument (or, with none,
# by $CONVEYOR_ROLE). Each role `exec`s its command, so SIGTERM reaches conveyor itself
# (a worker then shuts down warm: running tasks finish or go back to the queue).
#
#   worker [POOL] [ARGS]   conveyor worker --pool POOL (default $CONVEYOR_POOL, else default)
#   beat [ARGS]            conveyor beat
#   exporter [ARGS]        conveyor exporter on 0.0.0.0:$CONVEYOR_EXPORTER_PORT (9810)
#   flower [ARGS]          conveyor flower on 0.0.0.0:$CONVEYOR_FLOWER_PORT (5555), basic auth
#   migrate                conveyor db upgrade
#   client [ARGS]          conveyor ARGS (default: --help)
#   health                 the health check of this container's role (the image's HEALTHCHECK)
#   anything else          run as given: `conveyor demo`, `conveyor status`, `sh`
#
# `health` checks the role this entrypoint started (it notes it in /tmp, when writable), else
# $CONVEYOR_ROLE and $CONVEYOR_POOL, else the broker:
#   worker    conveyor health worker --pool POOL   (the worker answers a ping: broker + loop)
#   exporter  conveyor health exporter             (GET /healthz)
#   flower    conveyor health flower               (GET /healthcheck)
#   beat      conveyor health broker && conveyor health database
#   migrate   conveyor health database
#   client    conveyor health broker
set -eu

ROLE_FILE=${TMPDIR:-/tmp}/conveyor-role
EXPORTER_PORT=${CONVEYOR_EXPORTER_PORT:-9810}
FLOWER_PORT=${CONVEYOR_FLOWER_PORT:-5555}
FLOWER_PREFIX=${CONVEYOR_FLOWER_URL_PREFIX:-}

note_role() {
  # Best effort: with a read-only /tmp the health check falls back to $CONVEYOR_ROLE.
  printf '%s %s\n' "$1" "${2:-}" 2>/dev/null >"$ROLE_FILE" || true
}

health() {
  role=${CONVEYOR_ROLE:-client} pool=${CONVEYOR_POOL:-default}
  if [ -r "$ROLE_FILE" ]; then
    read -r role pool <"$ROLE_FILE" || true
  fi
  case "$role" in
    worker) exec conveyor health worker --pool "${pool:-default}" ;;
    exporter) exec conveyor health exporter --url "http://127.0.0.1:$EXPORTER_PORT/healthz" ;;
    flower)
      prefix=$(printf '%s' "$FLOWER_PREFIX" | sed 's#^/*##; s#/*$##')
      exec conveyor health flower --url "http://127.0.0.1:$FLOWER_PORT/${prefix:+$prefix/}healthcheck"
      ;;
    beat) conveyor health broker && exec conveyor health database ;;
    migrate) exec conveyor health database ;;
    client) exec conveyor health broker ;;
    *)
      echo "conveyor-entrypoint: unknown role '$role' (CONVEYOR_ROLE)" >&2
      exit 1
      ;;
  esac
}

if [ $# -eq 0 ]; then
  set -- "${CONVEYOR_ROLE:-client}"
fi
role=$1
shift

case "$role" in
  worker)
    pool=${CONVEYOR_POOL:-default}
    if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
      pool=$1
      shift
    fi
    note_role worker "$pool"
    exec conveyor worker --pool "$pool" "$@"
    ;;
  beat)
    note_role beat
    exec conveyor beat "$@"
    ;;
  exporter)
    note_role exporter
    exec conveyor exporter --host 0.0.0.0 --port "$EXPORTER_PORT" "$@"
    ;;
  flower)
    note_role flower
    if [ -n "$FLOWER_PREFIX" ]; then
      set -- --url-prefix "$FLOWER_PREFIX" "$@"
    fi
    exec conveyor flower --address 0.0.0.0 --port "$FLOWER_PORT" "$@"
    ;;
  migrate)
    note_role migrate
    exec conveyor db upgrade "$@"
    ;;
  client)
    note_role client
    [ $# -gt 0 ] || set -- --help
    exec conveyor "$@"
    ;;
  health)
    health
    ;;
  *)
    exec "$role" "$@"
    ;;
esac
