#!/usr/bin/env bash
# The demo on the running dev stack: make a sample data set at the primary,
# back it up, transmit the restore point to the secondary, restore it there
# and check that the restored tree is identical, bytes and metadata.
set -euo pipefail
DEV=${DRORCH_DEV_DIR:-/var/tmp/drorch-dev}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DRORCH="$ROOT/bin/drorch --config $ROOT/deployments/dev/drorch.yaml"
SRC=$DEV/data/primary
DST=$DEV/data/secondary

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "Sample data set at the primary: $SRC"
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
du -sh --apparent-size "$SRC" | sed 's/^/apparent size: /'
du -sh "$SRC" | sed 's/^/on disk:       /'

say "Backup at the primary"
$DRORCH backup --plan files --wait
say "Transmit to the secondary"
$DRORCH transmit --plan files --wait
say "Restore at the secondary into $DST"
$DRORCH restore --plan files --site secondary --wait

say "Verify"
listing() { (cd "$1" && find . -printf '%P|%y|%m|%s|%T@|%l\n' | sort); }
if diff -r --no-dereference "$SRC" "$DST" && diff <(listing "$SRC") <(listing "$DST"); then
	echo "restored tree identical: content, types, modes, sizes, mtimes, symlinks"
else
	echo "restored tree DIFFERS from the source" >&2
	exit 1
fi
printf 'sparse image on disk at the secondary: %s (apparent %s)\n' \
	"$(du -h "$DST/images/disk.img" | cut -f1)" "$(du -h --apparent-size "$DST/images/disk.img" | cut -f1)"

say "Restore points"
$DRORCH points --plan files --site primary
$DRORCH points --plan files --site secondary

say "Done"
echo "Temporal Web UI: http://127.0.0.1:8233 (search: DrorchPlan = \"files\")"
echo "The dev stack keeps running; stop it with: go tool task dev:down"
