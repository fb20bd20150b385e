#!/usr/bin/env bash
# The dev stack: a Temporal dev server (with its Web UI), one MinIO per site
# and a drorch worker serving both sites, all on loopback, state under
# $DRORCH_DEV_DIR (default /var/tmp/drorch-dev). Used by the Taskfile:
#   stack.sh up | down | status
# Binaries come from the per-version tool cache filled by `task tools`.
set -euo pipefail

DEV=${DRORCH_DEV_DIR:-/var/tmp/drorch-dev}
TOOLS=${DRORCH_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/drorch/tools}
TEMPORAL=${DRORCH_TEMPORAL_BIN:-$TOOLS/temporal-v1.5.1/temporal}
MINIO=${DRORCH_MINIO_BIN:-$TOOLS/minio-v0.0.0-20260212201848-7aac2a2c5b7c/minio}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CONFIG=${DRORCH_DEV_CONFIG:-$ROOT/deployments/dev/drorch.yaml}

: "${DRORCH_PRIMARY_ACCESS_KEY:?run through the Taskfile, which sets the dev credentials}"

running() { # name
	local pid
	pid=$(cat "$DEV/run/$1.pid" 2>/dev/null) || return 1
	kill -0 "$pid" 2>/dev/null
}

port_open() { # port
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_port() { # name port
	for _ in $(seq 1 120); do
		port_open "$2" && return 0
		running "$1" || { echo "$1 exited; last lines of $DEV/logs/$1.log:" >&2; tail -n 20 "$DEV/logs/$1.log" >&2; return 1; }
		sleep 0.5
	done
	echo "$1 did not open port $2 within 60 s; see $DEV/logs/$1.log" >&2
	return 1
}

start() { # name command...
	local name=$1
	shift
	if running "$name"; then
		echo "$name already running (pid $(cat "$DEV/run/$name.pid"))"
		return 0
	fi
	setsid "$@" >"$DEV/logs/$name.log" 2>&1 </dev/null &
	echo $! >"$DEV/run/$name.pid"
	echo "started $name (pid $!)"
}

stop() { # name
	local pid
	pid=$(cat "$DEV/run/$1.pid" 2>/dev/null) || return 0
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$pid" 2>/dev/null || true
		echo "stopped $1"
	fi
	rm -f "$DEV/run/$1.pid"
}

up() {
	for bin in "$TEMPORAL" "$MINIO"; do
		[ -x "$bin" ] || { echo "missing $bin: run 'go tool task tools' first" >&2; exit 1; }
	done
	mkdir -p "$DEV"/{run,logs,minio-primary,minio-secondary,data/primary,data/secondary}
	start temporal "$TEMPORAL" server start-dev --ip 127.0.0.1 --port 7233 --ui-port 8233 \
		--http-port 7243 --metrics-port 7244 --db-filename "$DEV/temporal.db" --log-level warn \
		--search-attribute DrorchPlan=Keyword --search-attribute DrorchSite=Keyword \
		--search-attribute DrorchOperation=Keyword
	MINIO_ROOT_USER=$DRORCH_PRIMARY_ACCESS_KEY MINIO_ROOT_PASSWORD=$DRORCH_PRIMARY_SECRET_KEY MINIO_BROWSER=off \
		start minio-primary "$MINIO" server --quiet --address 127.0.0.1:9001 "$DEV/minio-primary"
	MINIO_ROOT_USER=$DRORCH_SECONDARY_ACCESS_KEY MINIO_ROOT_PASSWORD=$DRORCH_SECONDARY_SECRET_KEY MINIO_BROWSER=off \
		start minio-secondary "$MINIO" server --quiet --address 127.0.0.1:9002 "$DEV/minio-secondary"
	wait_port temporal 7233
	wait_port minio-primary 9001
	wait_port minio-secondary 9002
	for _ in $(seq 1 60); do
		"$TEMPORAL" operator cluster health --address 127.0.0.1:7233 >/dev/null 2>&1 && break
		sleep 0.5
	done
	# The worker is restarted on every `up` so it runs the binary just built.
	stop worker
	start worker "$ROOT/bin/drorch-worker" --config "$CONFIG" --site primary --site secondary
	sleep 1
	running worker || { echo "the worker exited; see $DEV/logs/worker.log:" >&2; tail -n 20 "$DEV/logs/worker.log" >&2; exit 1; }
	status
}

down() {
	stop worker
	stop minio-secondary
	stop minio-primary
	stop temporal
}

status() {
	for name in temporal minio-primary minio-secondary worker; do
		if running "$name"; then state="running (pid $(cat "$DEV/run/$name.pid"))"; else state="stopped"; fi
		printf '%-16s %s\n' "$name" "$state"
	done
	echo "Temporal 127.0.0.1:7233, Web UI http://127.0.0.1:8233"
	echo "MinIO primary 127.0.0.1:9001, secondary 127.0.0.1:9002; state and logs in $DEV"
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
*) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
