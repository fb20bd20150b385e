#!/usr/bin/env bash
# The demo on the running dev stack (`go tool task demo`): the whole story of
# a sample service protected by drorch. Its data set is a directory at each
# site, its database is the site's PostgreSQL, and its clients find it as
# app.dev.drorch.test in BIND.
#
#   backup → transmit → restore, verified → drill → unplanned failover →
#   writes at the secondary → failback (data recovery) → switchover and back
#   → the protection schedule; then the service's PostgreSQL (plan db, in
#   demo-db.sh): base backup, WAL shipping, a crash mid-write, unplanned
#   failover with its RPO against the rows lost, switchover back
#
# Every check that fails stops the demo with a message. It ends with the plan
# active at its primary, as it began, so it can run again on the same stack.
set -euo pipefail
DEV=${DRORCH_DEV_DIR:-/var/tmp/drorch-dev}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DRORCH=("$ROOT/bin/drorch" --config "$ROOT/deployments/dev/drorch.yaml")
PGBIN=${DRORCH_PG_BINDIR:-/usr/lib/postgresql/15/bin}
PLAN=files
SWITCH_ID=drorch/$PLAN/switch
# As in stack.sh and drorch.yaml.
DNS_SERVER=127.0.0.1:5053
DNS_NAME=app.dev.drorch.test
declare -A DIR=([primary]=$DEV/data/primary [secondary]=$DEV/data/secondary)
declare -A PG_PORT=([primary]=5441 [secondary]=5442)
declare -A ADDR=([primary]=127.0.0.1 [secondary]=127.0.0.2)
SRC=${DIR[primary]}
DST=${DIR[secondary]}

n=0
step=""
say() { n=$((n + 1)); step=$*; printf '\n\033[1m== %d. %s\033[0m\n' "$n" "$*"; }
note() { printf '\033[2m%s\033[0m\n' "$*"; }
ok() { printf '\033[32mok\033[0m  %s\n' "$*"; }
fail() { printf '\033[31mdemo failed:\033[0m %s\n' "$*" >&2; exit 1; }
drorch() {
	note "\$ drorch $*"
	"${DRORCH[@]}" "$@" || fail "step $n ($step): drorch $* exited $? (its error is above)"
}
# Any other command that fails stops the demo too (set -e); say where.
set -E
trap 'printf "\033[31mdemo failed\033[0m in step %d (%s): %s exited %d\n" "$n" "$step" "$BASH_COMMAND" "$?" >&2' ERR

# --- the sample service -------------------------------------------------------
# It takes an order by recording it in the site's database and writing it as
# a file into the site's data set. A site whose database refuses writes (it
# is fenced, read-only) takes no order.

app_sql() { # site sql: as the service's role, over TCP with its password
	PGPASSWORD=$DRORCH_DEV_APP_PASSWORD "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 \
		"host=127.0.0.1 port=${PG_PORT[$1]} dbname=app user=app sslmode=disable connect_timeout=5" -c "$2"
}

take_order() { # site order
	local site=$1 order=$2
	app_sql "$site" "INSERT INTO orders (item, site) VALUES ('$order', '$site')" || return 1
	mkdir -p "${DIR[$site]}/orders"
	printf '{"order": "%s", "site": "%s", "at": "%s"}\n' "$order" "$site" "$(date -u +%FT%T.%3NZ)" \
		>"${DIR[$site]}/orders/$order.json"
	echo "the service at the $site took $order"
}

order() { # site order: one the site must take
	take_order "$1" "$2" || fail "the service at the $1 could not take $2 (its PostgreSQL on 127.0.0.1:${PG_PORT[$1]} refused it)"
}

expect_order() { # site order: the order's file is in the site's data set
	[ -f "${DIR[$1]}/orders/$2.json" ] || fail "$2 is not in the data set at the $1 (${DIR[$1]}/orders)"
	ok "$2 is in the data set at the $1"
}

expect_writable() { # site
	local site=$1 mode
	mode=$(app_sql "$site" 'SHOW default_transaction_read_only') || fail "the $site's PostgreSQL does not answer"
	[ "$mode" = off ] || fail "the $site's PostgreSQL is read-only; it should take writes"
	ok "the $site's PostgreSQL (127.0.0.1:${PG_PORT[$site]}) takes writes"
}

expect_refused() { # site: the fenced site's database refuses the service's writes
	local site=$1 out
	if out=$(take_order "$site" "refused-$RANDOM" 2>&1); then
		fail "the $site's PostgreSQL took a write, but the $site is fenced: $out"
	fi
	grep -Eq 'read-only transaction|not permitted to log in' <<<"$out" || fail "the $site's PostgreSQL refused the write for another reason: $out"
	ok "the $site's PostgreSQL refuses writes: $(grep -Eo '(ERROR|FATAL): .*' <<<"$out" | head -n 1)"
}

# --- DNS ----------------------------------------------------------------------
# dig comes from bind9-dnsutils, installed by `go tool task tools`.
lookup() {
	dig +short +norecurse @"${DNS_SERVER%:*}" -p "${DNS_SERVER#*:}" "$DNS_NAME" A
}

expect_dns() { # site
	local got
	got=$(lookup) || fail "BIND at $DNS_SERVER does not answer"
	[ "$got" = "${ADDR[$1]}" ] || fail "$DNS_NAME is '$got', want ${ADDR[$1]} (the $1)"
	ok "dig @${DNS_SERVER%:*} -p ${DNS_SERVER#*:} $DNS_NAME → $got (the $1)"
}

# --- the plan -----------------------------------------------------------------

active_site() {
	"${DRORCH[@]}" status --plan "$PLAN" --json 2>/dev/null | sed -n 's/^  "active": "\(.*\)",$/\1/p'
}

expect_active() { # site
	local got
	got=$(active_site)
	[ "$got" = "$1" ] || fail "drorch status says the plan is active at '$got', want the $1"
	ok "plan $PLAN is active at the $1"
}

in_progress() { # the plan's running switching operation, as drorch status shows it
	"${DRORCH[@]}" status --plan "$PLAN" 2>/dev/null | sed -n 's/^in progress *//p'
}

# wait_caught_up follows a data recovery in `drorch status` until its sync
# has caught up with the active site and it waits for `drorch complete`.
wait_caught_up() {
	local last="" line
	for _ in $(seq 1 180); do
		line=$(in_progress)
		[ -n "$line" ] || fail "the data recovery ended before it caught up: see drorch report --plan $PLAN and the Web UI"
		if [ "$line" != "$last" ]; then
			echo "  in progress: $line"
			last=$line
		fi
		case $line in *"waiting for caught up"*) return 0 ;; esac
		sleep 2
	done
	fail "the data recovery did not catch up within 6 minutes"
}

# DRORCH_DEMO_PART=db runs only the PostgreSQL part (plan db), on its own.
if [ "${DRORCH_DEMO_PART:-}" = db ]; then
	. "$ROOT/deployments/dev/demo-db.sh"
	db_story
	exit 0
fi

# --- before the story: a stack left mid-story by an interrupted run ------------

running=$(in_progress)
if [ -n "$running" ]; then
	note "a switching operation of plan $PLAN is still running (an interrupted demo?): $running"
	case $running in
	failback:*) drorch complete --plan "$PLAN" --force --wait >/dev/null ;;
	*)
		for _ in $(seq 1 300); do [ -n "$(in_progress)" ] || break; sleep 2; done
		[ -z "$(in_progress)" ] || fail "plan $PLAN's switching operation still runs: see drorch status --plan $PLAN"
		;;
	esac
fi
if [ "$(active_site)" = secondary ]; then
	note "an earlier run left the plan active at the secondary: switching back to the primary first"
	drorch failover --plan "$PLAN" --planned --wait >/dev/null
fi

# The story runs every procedure by hand: a protect schedule left running by
# an interrupted run is paused so that its cycles do not meet the switches.
"${DRORCH[@]}" schedule pause --plan "$PLAN" --note "paused while the demo runs" >/dev/null 2>&1 || true

# --- the story ----------------------------------------------------------------

say "The sample service at the primary: its data set $SRC"
rm -rf "$SRC" && mkdir -p "$SRC"/{docs,images,empty,"unicode ünïcødé 日本"}
for i in $(seq 1 20); do head -c $((RANDOM * 64)) /dev/urandom >"$SRC/docs/report-$i.bin"; done
head -c 8M /dev/urandom >"$SRC/images/photo.raw"
printf 'hello from the primary\n' >"$SRC/unicode ünïcødé 日本/ファイル.txt"
: >"$SRC/docs/empty-file"
truncate -s 256M "$SRC/images/disk.img"
printf 'boot sector' | dd of="$SRC/images/disk.img" conv=notrunc status=none
head -c 1M /dev/urandom | dd of="$SRC/images/disk.img" bs=1M seek=128 conv=notrunc status=none
ln -sfn docs/report-1.bin "$SRC/latest-report"
ln -sfn ../missing "$SRC/dangling-link"
chmod 0600 "$SRC/docs/report-2.bin"
expect_dns primary
expect_writable primary
for i in 1 2 3; do order primary "order-$i"; done
du -sh --apparent-size "$SRC" | sed 's/^/apparent size: /'
du -sh "$SRC" | sed 's/^/on disk:       /'

say "Backup at the primary"
drorch backup --plan "$PLAN" --wait
say "Transmit to the secondary"
drorch transmit --plan "$PLAN" --wait
say "Restore at the secondary into $DST, and verify"
drorch restore --plan "$PLAN" --site secondary --wait
listing() { (cd "$1" && find . -printf '%P|%y|%m|%s|%T@|%l\n' | sort); }
if diff -r --no-dereference "$SRC" "$DST" && diff <(listing "$SRC") <(listing "$DST"); then
	ok "restored tree identical: content, types, modes, sizes, mtimes, symlinks"
else
	fail "the restored tree at the secondary differs from the primary's"
fi
printf 'sparse image on disk at the secondary: %s (apparent %s)\n' \
	"$(du -h "$DST/images/disk.img" | cut -f1)" "$(du -h --apparent-size "$DST/images/disk.img" | cut -f1)"
drorch points --plan "$PLAN" --site secondary

say "Drill at the secondary: restore into a sandbox, verify every byte, check the service's data; production untouched"
drorch drill --plan "$PLAN" --wait
expect_dns primary
expect_active primary

say "Disaster: the primary is lost (unplanned failover to the secondary)"
note "The primary takes one more order after the last restore point the secondary holds: the failover cannot have it."
note "(On the dev stack the primary still answers, so drorch fences it anyway; a dark site is recorded as \"unreachable, not fenced\".)"
order primary order-4
drorch failover --plan "$PLAN" --unplanned --wait

say "After the failover: clients reach the secondary, and only the secondary takes writes"
expect_active secondary
expect_dns secondary
expect_writable secondary
expect_refused primary
[ ! -e "$DST/orders/order-4.json" ] || fail "order-4 reached the secondary, yet it was written after the last restore point"
ok "order-4 is not at the secondary: written after the last restore point, it is the data an unplanned failover loses (its RPO)"

say "The service runs at the secondary"
for i in 5 6 7; do order secondary "order-$i"; done

say "Failback: data recovery brings the secondary's data back to the primary"
drorch failback --plan "$PLAN"
note "The primary turns read-only and its own data is kept as a restore point; sync rounds bring the secondary's data to it."
wait_caught_up
expect_refused primary
expect_dns secondary
order secondary order-8
note "Complete: the secondary turns read-only, a final sync loses nothing, the primary takes over."
drorch complete --plan "$PLAN" --wait

say "After the failback: back at the primary, with everything written at the secondary"
expect_active primary
expect_dns primary
expect_writable primary
expect_refused secondary
for i in 5 6 7 8; do expect_order primary "order-$i"; done
[ ! -e "$SRC/orders/order-4.json" ] || fail "order-4 is still at the primary after the sync from the secondary"
ok "order-4 is gone from the primary's data set too: it holds the secondary's data now (order-4 is in the restore point the failback kept of the primary's own data)"
diff -r --no-dereference "$SRC" "$DST" >/dev/null || fail "the primary's data set differs from the secondary's after the switch back"
ok "the primary's data set is identical to the secondary's"

say "Switchover to the secondary (planned failover: nothing is lost)"
order primary order-9
drorch failover --plan "$PLAN" --planned --wait
expect_active secondary
expect_dns secondary
expect_order secondary order-9
expect_refused primary

say "Switchover back to the primary"
order secondary order-10
drorch failover --plan "$PLAN" --planned --wait
expect_active primary
expect_dns primary
expect_order primary order-10
expect_writable primary
expect_refused secondary

say "Switching reports: RTO and RPO of this run's four operations"
drorch report --plan "$PLAN" --last 4
say "Plan status"
drorch status --plan "$PLAN"

say "The protection cycle by itself: a Temporal Schedule runs Protect every minute"
drorch schedule apply --plan "$PLAN"
schedule_field() { # the plan's schedule's field $1, as `drorch schedule list --json` gives it
	"${DRORCH[@]}" schedule list --json | python3 -c 'import json,sys; print(str(next((s.get(sys.argv[1],"") for s in json.load(sys.stdin) if s["plan"]==sys.argv[2]), "")).lower())' "$1" "$PLAN"
}
actions=$(schedule_field actions)
drorch schedule unpause --plan "$PLAN" --note "running for the demo"
note "waiting for the schedule to start a cycle by itself (backup → transmit → retention → warm standby refresh)"
last=""
for _ in $(seq 1 90); do
	if [ "$(schedule_field actions)" != "$actions" ]; then
		last=$(schedule_field lastResult)
		[ -n "$last" ] && [ "$last" != running ] && break
	fi
	sleep 2
done
drorch schedule list
[ "$last" = completed ] || note "the last cycle ended $last: see it in the Web UI (DrorchOperation = \"protect\")"
drorch status --plan "$PLAN"
note "temporal schedule list / temporal schedule describe --schedule-id drorch/$PLAN/protect show it too"
drorch schedule pause --plan "$PLAN" --note "paused at the end of the demo: drorch schedule unpause --plan $PLAN keeps it running"

# shellcheck source=deployments/dev/demo-db.sh
. "$ROOT/deployments/dev/demo-db.sh"
db_story

say "Done"
echo "Temporal Web UI: http://127.0.0.1:8233 (search: DrorchPlan = \"$PLAN\"; the switching runs have workflow id $SWITCH_ID)"
echo "Ask BIND yourself:  dig @${DNS_SERVER%:*} -p ${DNS_SERVER#*:} $DNS_NAME"
echo "The service's database at a site:  PGPASSWORD=\$DRORCH_DEV_APP_PASSWORD psql 'host=127.0.0.1 port=${PG_PORT[primary]} dbname=app user=app' -c 'TABLE orders'"
echo "Plan db's database at the primary:  PGPASSWORD=\$DRORCH_DEV_APP_PASSWORD psql 'host=127.0.0.1 port=5443 dbname=app user=app' -c 'SELECT count(*) FROM payments'"
echo "The dev stack keeps running; stop it with: go tool task dev:down"
