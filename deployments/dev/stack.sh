#!/usr/bin/env bash
# The dev stack: a Temporal dev server (with its Web UI), one MinIO and one
# PostgreSQL 15 cluster per site (fenced by plan files), plan db's pair of
# clusters (the primary's archiving its WAL with drorch-worker wal-push, the
# secondary's data directory its restore target), one BIND 9 server holding
# the zone whose record a failover repoints, and a drorch worker serving both
# sites, all on
# loopback, state under $DRORCH_DEV_DIR (default /var/tmp/drorch-dev). Used by
# the Taskfile:
#   stack.sh up | down | status
# Temporal and MinIO come from the per-version tool cache filled by `task
# tools`, BIND and PostgreSQL from Debian's packages (`task tools:debian`).
set -euo pipefail

DEV=${DRORCH_DEV_DIR:-/var/tmp/drorch-dev}
TOOLS=${DRORCH_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/drorch/tools}
TEMPORAL=${DRORCH_TEMPORAL_BIN:-$TOOLS/temporal-v1.5.1/temporal}
MINIO=${DRORCH_MINIO_BIN:-$TOOLS/minio-v0.0.0-20260212201848-7aac2a2c5b7c/minio}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CONFIG=${DRORCH_DEV_CONFIG:-$ROOT/deployments/dev/drorch.yaml}
PGBIN=${DRORCH_PG_BINDIR:-/usr/lib/postgresql/15/bin}
NAMED=${DRORCH_NAMED_BIN:-$(command -v named || echo /usr/sbin/named)}

# Ports and names the dev config (drorch.yaml) and demo.sh use too.
PG_PORT_primary=5441
PG_PORT_secondary=5442
# The service's database cluster that plan db protects physically: the
# primary's runs and archives its WAL; the secondary's data directory is the
# restore target, stopped until a failover's restore starts it.
PGDB_PORT_primary=5443
PGDB_PORT_secondary=5444
DNS_PORT=5053
DNS_ZONE=dev.drorch.test
TSIG_KEY=drorch-dev

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

stop() { # name [signal, default TERM]
	local pid
	pid=$(cat "$DEV/run/$1.pid" 2>/dev/null) || return 0
	if kill -0 "$pid" 2>/dev/null; then
		kill "-${2:-TERM}" "$pid" 2>/dev/null || true
		for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$pid" 2>/dev/null || true
		echo "stopped $1"
	fi
	rm -f "$DEV/run/$1.pid"
}

# PostgreSQL refuses to run as root: as root, the clusters belong to the user
# postgres (made by Debian's package) and run as it; setpriv execs, so the pid
# file names the postmaster itself.
as_postgres=()
if [ "$(id -u)" = 0 ]; then
	as_postgres=(setpriv --reuid=postgres --regid=postgres --init-groups --)
fi

give_to_postgres() { # path...
	if [ "$(id -u)" = 0 ]; then chown postgres: "$@"; fi
}

pg_sql() { # site psql-arguments...: as the superuser, over the cluster's unix socket
	local site=$1
	shift
	PGOPTIONS='-c client_min_messages=warning' "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$DEV/postgres-$site/sock" -p "$(port_of "$site")" -U drorch "$@"
}

# postgres_up makes the site's cluster once (initdb: superuser drorch with the
# site's password, scram-sha-256 over TCP, trust on its private unix socket),
# starts it on its loopback port and makes sure the sample service's role
# app, its database app and its table exist. A new cluster at the secondary
# starts read-only: it is the plan's standby until a failover opens it.
postgres_up() { # site
	local site=$1 dir=$DEV/postgres-$1 port new=false
	port=$(port_of "$site")
	mkdir -p "$dir/sock"
	chmod 0700 "$dir" "$dir/sock"
	give_to_postgres "$dir" "$dir/sock"
	if [ ! -f "$dir/data/PG_VERSION" ]; then
		rm -rf "$dir/data"
		(umask 077 && password_of "$site" >"$dir/pwfile")
		give_to_postgres "$dir/pwfile"
		# initdb looks up its working directory, which user postgres must be able to read.
		if ! (cd "$dir" && "${as_postgres[@]}" "$PGBIN/initdb" -D "$dir/data" -U drorch --pwfile "$dir/pwfile" \
			--auth-host=scram-sha-256 --auth-local=trust -E UTF8 --locale=C >"$DEV/logs/initdb-$site.log" 2>&1); then
			rm -f "$dir/pwfile"
			echo "initdb for postgres-$site failed; see $DEV/logs/initdb-$site.log:" >&2
			tail -n 20 "$DEV/logs/initdb-$site.log" >&2
			exit 1
		fi
		rm -f "$dir/pwfile"
		new=true
	fi
	(cd "$dir" && start "postgres-$site" "${as_postgres[@]}" "$PGBIN/postgres" -D "$dir/data" -p "$port" \
		-k "$dir/sock" -c listen_addresses=127.0.0.1)
	local ready=false
	for _ in $(seq 1 120); do
		if "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port"; then ready=true; break; fi
		running "postgres-$site" || break
		sleep 0.5
	done
	if ! $ready; then
		echo "postgres-$site is not ready on 127.0.0.1:$port; last lines of $DEV/logs/postgres-$site.log:" >&2
		tail -n 20 "$DEV/logs/postgres-$site.log" >&2
		exit 1
	fi

	# Each session turns the cluster's read-only default off for itself, so
	# this also works on a cluster a failover left read-only.
	local rw='SET default_transaction_read_only = off'
	if [ -z "$(pg_sql "$site" -d postgres -c "SELECT 1 FROM pg_roles WHERE rolname = 'app'")" ]; then
		# psql fills in :'pw' (quoted) only in what it reads, not in -c.
		printf '%s;\nCREATE ROLE app LOGIN PASSWORD :%s;\n' "$rw" "'pw'" |
			pg_sql "$site" -d postgres -v pw="$DRORCH_DEV_APP_PASSWORD"
	fi
	if [ -z "$(pg_sql "$site" -d postgres -c "SELECT 1 FROM pg_database WHERE datname = 'app'")" ]; then
		pg_sql "$site" -d postgres -c "$rw" -c 'CREATE DATABASE app OWNER app'
	fi
	pg_sql "$site" -d app -c "$rw" -c 'SET ROLE app' -c 'CREATE TABLE IF NOT EXISTS orders (
		id serial PRIMARY KEY, item text NOT NULL, site text NOT NULL, at timestamptz NOT NULL DEFAULT now())'
	if $new && [ "$site" = secondary ]; then
		pg_sql "$site" -d postgres -c "$rw" -c 'ALTER ROLE app NOLOGIN' \
			-c 'ALTER SYSTEM SET default_transaction_read_only = on' -c 'SELECT pg_reload_conf()' >/dev/null
	fi
	# A read-only cluster is fenced as drorch fences it: the service's role
	# may not log in either (a cluster made by an older stack.sh let it).
	if [ "$(pg_sql "$site" -d postgres -c 'SHOW default_transaction_read_only')" = on ]; then
		pg_sql "$site" -d postgres -c "$rw" -c 'ALTER ROLE app NOLOGIN' >/dev/null
	fi
}

port_of() { # site
	case $1 in primary) echo "$PG_PORT_primary" ;; secondary) echo "$PG_PORT_secondary" ;; esac
}

password_of() { # site
	case $1 in
	primary) printf '%s\n' "$DRORCH_PRIMARY_PG_PASSWORD" ;;
	secondary) printf '%s\n' "$DRORCH_SECONDARY_PG_PASSWORD" ;;
	esac
}

# pgdb_ctl runs pg_ctl on a db-plan cluster as its owner.
pgdb_ctl() { # site pg_ctl-arguments...
	local site=$1
	shift
	(cd "$DEV/pgdb-$site" && "${as_postgres[@]}" "$PGBIN/pg_ctl" -D "$DEV/pgdb-$site/data" "$@")
}

pgdb_running() { # site
	pgdb_ctl "$1" status >/dev/null 2>&1
}

# pgdb_up makes the clusters of plan db once (initdb as for postgres_up,
# superuser drorch with the primary's password at both: the secondary's is
# replaced by a physical copy of the primary's). The primary's archives every
# WAL file into the primary site's repository with drorch-worker wal-push
# (set on every up, so it names this checkout's binary and config) and is
# started with pg_ctl, as a restore by drorch starts a cluster: a server a
# failover or switchover restored is then seen as running. The secondary's
# is left stopped: plan db's standby, restored and started by a failover.
pgdb_up() {
	local site dir new
	for site in primary secondary; do
		dir=$DEV/pgdb-$site
		mkdir -p "$dir/sock"
		chmod 0700 "$dir/sock"
		chmod 0755 "$dir"
		give_to_postgres "$dir" "$dir/sock"
		[ -f "$dir/data/PG_VERSION" ] && continue
		rm -rf "$dir/data"
		(umask 077 && password_of primary >"$dir/pwfile")
		give_to_postgres "$dir/pwfile"
		if ! (cd "$dir" && "${as_postgres[@]}" "$PGBIN/initdb" -D "$dir/data" -U drorch --pwfile "$dir/pwfile" \
			--auth-host=scram-sha-256 --auth-local=trust -E UTF8 --locale=C >"$DEV/logs/initdb-pgdb-$site.log" 2>&1); then
			rm -f "$dir/pwfile"
			echo "initdb for pgdb-$site failed; see $DEV/logs/initdb-pgdb-$site.log:" >&2
			tail -n 20 "$DEV/logs/initdb-pgdb-$site.log" >&2
			exit 1
		fi
		rm -f "$dir/pwfile"
	done
	dir=$DEV/pgdb-primary
	if ! pgdb_running primary; then
		# archive_mode takes a restart: it is written before the server starts.
		# A data directory a restore replaced carries drorch's own settings.
		if ! grep -q '^archive_mode' "$dir/data/postgresql.auto.conf"; then
			printf "archive_mode = on\narchive_timeout = '10s'\n" >>"$dir/data/postgresql.auto.conf"
		fi
		: >>"$DEV/logs/pgdb-primary.log"
		give_to_postgres "$DEV/logs/pgdb-primary.log"
		pgdb_ctl primary start -w -t 60 -l "$DEV/logs/pgdb-primary.log" \
			-o "-p $PGDB_PORT_primary -k $dir/sock -c listen_addresses=127.0.0.1" >/dev/null ||
			{ echo "pgdb-primary did not start; see $DEV/logs/pgdb-primary.log" >&2; tail -n 20 "$DEV/logs/pgdb-primary.log" >&2; exit 1; }
		echo "started pgdb-primary"
	fi
	local sql=("$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$dir/sock" -p "$PGDB_PORT_primary" -U drorch)
	"${sql[@]}" -d postgres -c "ALTER SYSTEM SET archive_command = '$ROOT/bin/drorch-worker wal-push --plan db --site primary --config $CONFIG %p'" -c 'SELECT pg_reload_conf()' >/dev/null
	if [ -z "$("${sql[@]}" -d postgres -c "SELECT 1 FROM pg_roles WHERE rolname = 'app'")" ]; then
		printf 'CREATE ROLE app LOGIN PASSWORD :%s;\n' "'pw'" | "${sql[@]}" -d postgres -v pw="$DRORCH_DEV_APP_PASSWORD"
	fi
	if [ -z "$("${sql[@]}" -d postgres -c "SELECT 1 FROM pg_database WHERE datname = 'app'")" ]; then
		"${sql[@]}" -d postgres -c 'CREATE DATABASE app OWNER app'
	fi
	"${sql[@]}" -d app -c 'SET ROLE app' -c 'CREATE TABLE IF NOT EXISTS payments (
		id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())'
}

# named_up starts BIND 9 with the zone $DNS_ZONE, which takes dynamic updates
# signed with the TSIG key $TSIG_KEY ($DRORCH_DEV_TSIG_SECRET). The zone file
# is written once, pointing app.$DNS_ZONE at the primary: afterwards named
# keeps the updates a failover makes in its journal, across restarts. rndc is
# off (controls { }), so nothing else is listened on.
named_up() {
	local dir=$DEV/bind
	mkdir -p "$dir"
	cat >"$dir/named.conf" <<EOF
key "$TSIG_KEY" {
	algorithm hmac-sha256;
	secret "$DRORCH_DEV_TSIG_SECRET";
};
controls { };
options {
	directory "$dir";
	pid-file "$dir/named.pid";
	session-keyfile "$dir/session.key";
	managed-keys-directory "$dir";
	listen-on port $DNS_PORT { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	notify no;
	dnssec-validation no;
	allow-transfer { none; };
};
zone "$DNS_ZONE" {
	type primary;
	file "$dir/$DNS_ZONE.zone";
	allow-update { key "$TSIG_KEY"; };
};
EOF
	if [ ! -f "$dir/$DNS_ZONE.zone" ]; then
		cat >"$dir/$DNS_ZONE.zone" <<EOF
\$TTL 60
@	IN SOA	ns.$DNS_ZONE. hostmaster.$DNS_ZONE. 1 3600 600 86400 60
@	IN NS	ns.$DNS_ZONE.
ns	IN A	127.0.0.1
app	IN A	127.0.0.1
EOF
	fi
	# -g: foreground, log to stderr; -4: IPv4 only; -n 1: one worker thread.
	local named=$NAMED
	if grep -qs named /sys/kernel/security/apparmor/profiles; then
		# Debian's AppArmor profile for /usr/sbin/named, attached by path,
		# keeps it out of $dir: run a copy of the binary from elsewhere.
		mkdir -p "$DEV/bin"
		cp "$NAMED" "$DEV/bin/.named.new" && chmod 0755 "$DEV/bin/.named.new" && mv -f "$DEV/bin/.named.new" "$DEV/bin/named"
		named=$DEV/bin/named
	fi
	start named "$named" -g -4 -n 1 -c "$dir/named.conf"
	if ! wait_port named "$DNS_PORT"; then
		if grep -qi 'permission denied' "$DEV/logs/named.log"; then
			echo "named may not use $dir (permission denied); if a security module confines it, allow $dir/** rw for it" >&2
		fi
		exit 1
	fi
	if grep -q 'address in use' "$DEV/logs/named.log"; then
		echo "named cannot listen on 127.0.0.1:$DNS_PORT (address in use); see $DEV/logs/named.log" >&2
		exit 1
	fi
}

up() {
	for bin in "$TEMPORAL" "$MINIO"; do
		[ -x "$bin" ] || { echo "missing $bin: run 'go tool task tools' first" >&2; exit 1; }
	done
	for bin in "$PGBIN/initdb" "$PGBIN/postgres" "$NAMED"; do
		[ -x "$bin" ] || { echo "missing $bin: run 'go tool task tools:debian' (as root) first" >&2; exit 1; }
	done
	for v in DRORCH_PRIMARY_PG_PASSWORD DRORCH_SECONDARY_PG_PASSWORD DRORCH_DEV_APP_PASSWORD DRORCH_DEV_TSIG_SECRET; do
		[ -n "${!v:-}" ] || { echo "$v is not set: run through the Taskfile, which sets the dev credentials" >&2; exit 1; }
	done
	mkdir -p "$DEV"/{run,logs,minio-primary,minio-secondary,data/primary,data/secondary}
	start temporal "$TEMPORAL" server start-dev --ip 127.0.0.1 --port 7233 --ui-port 8233 \
		--http-port 7243 --metrics-port 7244 --db-filename "$DEV/temporal.db" --log-level warn \
		--dynamic-config-value matching.numTaskqueueReadPartitions=1 \
		--dynamic-config-value matching.numTaskqueueWritePartitions=1 \
		--search-attribute DrorchPlan=Keyword --search-attribute DrorchSite=Keyword \
		--search-attribute DrorchOperation=Keyword --search-attribute DrorchRPOBreached=Bool
	MINIO_ROOT_USER=$DRORCH_PRIMARY_ACCESS_KEY MINIO_ROOT_PASSWORD=$DRORCH_PRIMARY_SECRET_KEY MINIO_BROWSER=off \
		start minio-primary "$MINIO" server --quiet --address 127.0.0.1:9001 "$DEV/minio-primary"
	MINIO_ROOT_USER=$DRORCH_SECONDARY_ACCESS_KEY MINIO_ROOT_PASSWORD=$DRORCH_SECONDARY_SECRET_KEY MINIO_BROWSER=off \
		start minio-secondary "$MINIO" server --quiet --address 127.0.0.1:9002 "$DEV/minio-secondary"
	postgres_up primary
	postgres_up secondary
	pgdb_up
	named_up
	wait_port temporal 7233
	wait_port minio-primary 9001
	wait_port minio-secondary 9002
	for _ in $(seq 1 60); do
		"$TEMPORAL" operator cluster health --address 127.0.0.1:7233 >/dev/null 2>&1 && break
		sleep 0.5
	done
	# --search-attribute registers only into a new database: one made by an
	# older stack gets the attributes added since.
	for sa in DrorchPlan=Keyword DrorchSite=Keyword DrorchOperation=Keyword DrorchRPOBreached=Bool; do
		"$TEMPORAL" operator search-attribute list --address 127.0.0.1:7233 2>/dev/null | grep -qw "${sa%=*}" ||
			"$TEMPORAL" operator search-attribute create --address 127.0.0.1:7233 --name "${sa%=*}" --type "${sa#*=}" >/dev/null
	done
	# The worker is restarted on every `up` so it runs the binary just built.
	stop worker
	start worker "$ROOT/bin/drorch-worker" --config "$CONFIG" --site primary --site secondary --metrics-listen 127.0.0.1:9464
	sleep 1
	running worker || { echo "the worker exited; see $DEV/logs/worker.log:" >&2; tail -n 20 "$DEV/logs/worker.log" >&2; exit 1; }
	status
}

down() {
	stop worker
	stop named
	# SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for every client.
	stop postgres-secondary INT
	stop postgres-primary INT
	local site
	for site in primary secondary; do
		if [ -f "$DEV/pgdb-$site/data/PG_VERSION" ] && pgdb_running "$site"; then
			pgdb_ctl "$site" stop -m fast >/dev/null && echo "stopped pgdb-$site"
		fi
	done
	stop minio-secondary
	stop minio-primary
	stop temporal
}

status() {
	for name in temporal minio-primary minio-secondary postgres-primary postgres-secondary named worker; do
		if running "$name"; then state="running (pid $(cat "$DEV/run/$name.pid"))"; else state="stopped"; fi
		printf '%-19s %s\n' "$name" "$state"
	done
	for site in primary secondary; do
		if [ -f "$DEV/pgdb-$site/data/PG_VERSION" ] && pgdb_running "$site"; then state=running; else state=stopped; fi
		printf '%-19s %s\n' "pgdb-$site" "$state"
	done
	echo "Temporal 127.0.0.1:7233, Web UI http://127.0.0.1:8233"
	echo "MinIO primary 127.0.0.1:9001, secondary 127.0.0.1:9002"
	echo "PostgreSQL primary 127.0.0.1:$PG_PORT_primary, secondary 127.0.0.1:$PG_PORT_secondary (database app)"
	echo "PostgreSQL of plan db: primary 127.0.0.1:$PGDB_PORT_primary (archiving WAL), secondary 127.0.0.1:$PGDB_PORT_secondary (its standby: stopped until a failover)"
	echo "BIND 127.0.0.1:$DNS_PORT (UDP and TCP), zone $DNS_ZONE.: dig @127.0.0.1 -p $DNS_PORT app.$DNS_ZONE"
	echo "state and logs in $DEV"
}

case "${1:-}" in
up) up ;;
down) down ;;
status) status ;;
*) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
