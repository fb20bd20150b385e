# The demo's PostgreSQL part, sourced by demo.sh (its helpers: say, note,
# ok, fail, drorch, DRORCH, PGBIN, DEV): plan db protects the sample
# service's database cluster physically. The service writes rows into it
# continuously; a base backup is taken and transmitted, the WAL the primary
# archives (wal-push, archive_timeout 10s) is shipped to the secondary by
# ShipWAL; the primary cluster is killed mid-write, the plan fails over
# unplanned, and the report's RPO is compared with the rows actually lost.
# Then a switchover brings the plan back to the primary (nothing lost), and
# the secondary's copy is stopped again, so the demo can run again.

DB_PLAN=db
declare -A DB_PORT=([primary]=5443 [secondary]=5444)
DB_WRITES=$DEV/demo-db-writes # one line per committed row: id, commit time (epoch seconds)
db_writer_pid=""

db_sql() { # site sql: as the service's role app, over TCP
	PGPASSWORD=$DRORCH_DEV_APP_PASSWORD "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 \
		"host=127.0.0.1 port=${DB_PORT[$1]} dbname=app user=app sslmode=disable connect_timeout=3" -c "$2"
}

db_ctl() { # site pg_ctl-arguments...: on the site's data directory, as its owner
	local site=$1 as=()
	shift
	[ "$(id -u)" = 0 ] && as=(setpriv --reuid=postgres --regid=postgres --init-groups --)
	(cd / && "${as[@]}" "$PGBIN/pg_ctl" -D "$DEV/pgdb-$site/data" "$@")
}

db_status_json() { "${DRORCH[@]}" status --plan "$DB_PLAN" --json 2>/dev/null; }

db_active() { db_status_json | python3 -c 'import json,sys; print(json.load(sys.stdin).get("active",""))' 2>/dev/null || true; }

db_in_progress() { "${DRORCH[@]}" status --plan "$DB_PLAN" 2>/dev/null | sed -n 's/^in progress *//p'; }

# db_wal_field prints field $1 of the WAL shipping status to the secondary.
db_wal_field() {
	db_status_json | python3 -c '
import json, sys
w = (json.load(sys.stdin).get("wal") or {})
for s in w.get("sites") or w.get("standbys") or []:
    if s.get("site") == "secondary":
        print(s.get(sys.argv[1], ""))
' "$1" 2>/dev/null || true
}

db_stop_writer() {
	[ -n "$db_writer_pid" ] || return 0
	kill "$db_writer_pid" 2>/dev/null || true
	wait "$db_writer_pid" 2>/dev/null || true
	db_writer_pid=""
}

# db_leftovers puts plan db back as the story starts it, whatever an
# interrupted run left: active at the primary, the primary's cluster
# running, the secondary's stopped.
db_leftovers() {
	for _ in $(seq 1 150); do [ -z "$(db_in_progress)" ] && break; sleep 2; done
	[ -z "$(db_in_progress)" ] || fail "plan $DB_PLAN's switching operation still runs: see drorch status --plan $DB_PLAN"
	if [ "$(db_active)" = secondary ]; then
		note "an earlier run left plan $DB_PLAN active at the secondary: switching it back to the primary first"
		drorch failover --plan "$DB_PLAN" --planned --wait >/dev/null
	fi
	if db_ctl secondary status >/dev/null 2>&1; then
		note "stopping the secondary's copy of plan $DB_PLAN's database left running by an earlier run"
		db_ctl secondary stop -m fast >/dev/null
	fi
	db_ctl primary status >/dev/null 2>&1 || fail "plan $DB_PLAN's primary cluster does not run: go tool task dev:up starts it"
}

db_story() {
	say "The service's database (plan $DB_PLAN): rows written continuously at the primary, WAL archived by drorch-worker wal-push"
	db_leftovers
	note "archive_command = $(db_sql primary 'SHOW archive_command')"
	note "archive_timeout = $(db_sql primary 'SHOW archive_timeout')"
	local first
	first=$(($(db_sql primary 'SELECT coalesce(max(id), 0) FROM payments') + 1))
	: >"$DB_WRITES"
	# One committed INSERT every ~50 ms; a row is logged once its commit
	# returned, so the log is what the service knows it wrote.
	(
		trap - ERR
		i=$first
		while db_sql primary "INSERT INTO payments (id) VALUES ($i)" 2>/dev/null; do
			printf '%d %s\n' "$i" "$EPOCHREALTIME" >>"$DB_WRITES"
			i=$((i + 1))
			sleep 0.05
		done
	) &
	db_writer_pid=$!
	trap db_stop_writer EXIT
	sleep 2
	[ -s "$DB_WRITES" ] || fail "the service wrote no row into plan $DB_PLAN's database at 127.0.0.1:${DB_PORT[primary]}"
	ok "the service writes rows at the primary (from id $first)"

	say "Base backup of plan $DB_PLAN (pg_basebackup, streamed into chunks) while the service writes, and transmit"
	drorch backup --plan "$DB_PLAN" --wait
	drorch transmit --plan "$DB_PLAN" --wait

	say "Continuous WAL shipping to the secondary (ShipWAL, started by schedule apply)"
	drorch schedule apply --plan "$DB_PLAN"
	local shipped=""
	for _ in $(seq 1 30); do
		shipped=$(db_wal_field shipped)
		[ -n "$shipped" ] && [ "$shipped" != 0 ] && break
		sleep 1
	done
	[ -n "$shipped" ] && [ "$shipped" != 0 ] || fail "no WAL file reached the secondary within 30 s: see drorch status --plan $DB_PLAN and the worker log"
	sleep 12 # a WAL file or two more (archive_timeout 10s) while the service writes
	drorch status --plan "$DB_PLAN"
	ok "WAL reaches the secondary: $(db_wal_field shipped) files shipped, lag $(db_wal_field lag)"

	say "Disaster: the primary's database cluster crashes mid-write (unplanned failover of plan $DB_PLAN)"
	local killed
	db_ctl primary stop -m immediate >/dev/null
	killed=$EPOCHREALTIME
	note "killed the primary cluster (pg_ctl stop -m immediate: no shutdown checkpoint, nothing more archived)"
	for _ in $(seq 1 50); do kill -0 "$db_writer_pid" 2>/dev/null || break; sleep 0.1; done
	db_stop_writer
	local written last_id last_at
	written=$(wc -l <"$DB_WRITES")
	read -r last_id last_at < <(tail -n 1 "$DB_WRITES")
	ok "the service had written $written rows (ids $first..$last_id), the last at $(date -u -d "@$last_at" +%T.%3N)"
	drorch failover --plan "$DB_PLAN" --unplanned --wait

	say "After the failover: the secondary's database runs, recovered from the base backup and the shipped WAL"
	local present max at_secondary
	present=$(db_sql secondary "SELECT count(*) FROM payments WHERE id >= $first") ||
		fail "the secondary's database at 127.0.0.1:${DB_PORT[secondary]} does not answer"
	max=$(db_sql secondary "SELECT coalesce(max(id), 0) FROM payments WHERE id >= $first")
	at_secondary=$(db_sql secondary "SELECT coalesce(extract(epoch FROM max(at)), 0) FROM payments WHERE id >= $first")
	[ "$present" -gt 0 ] || fail "none of this run's rows is at the secondary"
	[ "$present" = $((max - first + 1)) ] || fail "the secondary has $present rows of ids $first..$max: a gap"
	[ "$(db_sql secondary 'SELECT pg_is_in_recovery()')" = f ] || fail "the secondary's database is still in recovery"
	ok "the secondary takes writes, with $present of the $written rows (ids $first..$max, no gap)"
	[ "$(db_sql secondary 'SHOW archive_mode')" = on ] || fail "the secondary's database does not archive its WAL: the plan's new active site must"
	ok "the secondary archives its own WAL now, into the secondary's repository (the failover's restore set archive_command)"
	db_sql secondary "INSERT INTO payments (id) VALUES ($((last_id + 1000000)))" >/dev/null
	db_sql secondary "DELETE FROM payments WHERE id = $((last_id + 1000000))" >/dev/null

	say "RPO: the failover report against the rows actually lost"
	"${DRORCH[@]}" report --plan "$DB_PLAN" --last 1 --json | python3 -c '
import json, sys
from datetime import datetime
r = json.load(sys.stdin)
r = (r.get("reports") if isinstance(r, dict) else r)[0]
killed, last, at_sec, written, present = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
def ts(x): return datetime.fromtimestamp(x).astimezone().strftime("%H:%M:%S.%f")[:-3]
print("failover report:  RTO %s, RPO %s, recovered to %s (the last transaction the secondary replayed)" % (r.get("rto"), r.get("rpo"), r.get("recoveredTo", "?")))
print("measured:         last row written at the primary %s, last row at the secondary %s, primary killed %s" % (ts(last), ts(at_sec), ts(killed)))
print("data lost:        %.1f s of writes: %d of %d rows (%d at the secondary)" % (last - at_sec, written - present, written, present))
' "$killed" "$last_at" "$at_secondary" "$written" "$present"
	local lost
	lost=$(python3 -c 'import sys; print(int(float(sys.argv[1]) - float(sys.argv[2])))' "$last_at" "$at_secondary")
	[ "$lost" -le 30 ] || fail "the failover lost $lost s of writes; with archive_timeout 10s and shipping every 2s it should be under 30 s"
	ok "data lost: ${lost}s ≤ archive_timeout (10s) + shipping round (2s) + the copy, well within the plan's objective (rpo 1m)"

	say "Switchover of plan $DB_PLAN back to the primary (planned: a last base backup at the secondary, nothing lost)"
	drorch failover --plan "$DB_PLAN" --planned --wait
	db_ctl secondary stop -m fast >/dev/null
	local back
	back=$(db_sql primary "SELECT count(*) FROM payments WHERE id >= $first") || fail "the primary's database does not answer after the switchover"
	[ "$back" = "$present" ] || fail "the primary has $back of this run's rows after the switchover, the secondary had $present"
	[ "$(db_sql primary 'SHOW archive_mode')" = on ] || fail "the primary's database does not archive its WAL after the switchover"
	ok "the primary runs again with the secondary's $back rows and archives its WAL; the secondary's copy is stopped: the standby again"
	# ShipWAL's next round ends the "switch runs" pause.
	for _ in $(seq 1 10); do
		"${DRORCH[@]}" status --plan "$DB_PLAN" 2>/dev/null | grep -q 'a switch of the plan runs' || break
		sleep 1
	done
	drorch status --plan "$DB_PLAN"
}
