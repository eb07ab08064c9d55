#!/usr/bin/env bash
# pgimage.sh: build the PostgreSQL image make bench's pgbench suite runs
# (holdfast-bench-postgres:latest) if it is absent or older than this script.
#
# There is no registry to pull from: the image is a rootfs made of the files
# of Debian's postgresql-15 and postgresql-client-15 packages (installed on
# the host by make bench), the shared libraries they link, busybox-static for
# a shell, and a postgres user (uid and gid 999), imported with
# `docker import`. Cached by dockerd itself: a second run does nothing.
#
# Environment: HOLDFAST_PG_IMAGE (default holdfast-bench-postgres:latest).
set -euo pipefail

image=${HOLDFAST_PG_IMAGE:-holdfast-bench-postgres:latest}
# Bump when the image's content changes: an older image is rebuilt.
image_version=2

say() { echo "holdfast/pgimage: $*"; }
die() { echo "holdfast/pgimage: ERROR: $*" >&2; exit 1; }

if [ "$(docker image inspect --format '{{index .Config.Labels "holdfast.image-version"}}' "$image" 2>/dev/null)" = "$image_version" ]; then
	exit 0
fi
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bin" ] || die "no PostgreSQL in /usr/lib/postgresql: install Debian's postgresql (make bench does: hack/deps.sh postgresql)"
ver=$(basename "$(dirname "$bin")")
[ -x /bin/busybox ] || die "no /bin/busybox: install busybox-static"

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir"/{bin,tmp,etc,proc,sys,dev,run/postgresql,var/lib/postgresql}
chmod 1777 "$dir/tmp" "$dir/run/postgresql"
cp /bin/busybox "$dir/bin/busybox"
for a in sh rm mkdir cat ls sleep sync; do ln -s busybox "$dir/bin/$a"; done

# The packages' files (not their documentation), then every library the
# binaries and the server's modules link, as the host's loader finds them.
# (tar, not cp --parents, which loses the first file of each new folder here.)
{
	for pkg in "postgresql-$ver" "postgresql-client-$ver"; do
		dpkg -L "$pkg" | while read -r f; do
			case "$f" in /usr/share/doc/* | /usr/share/man/* | /usr/share/locale/* | /usr/share/postgresql/*/man/*) continue ;; esac
			if [ -f "$f" ] || [ -L "$f" ]; then echo "$f"; fi
		done
	done
	find /usr/share/zoneinfo -type f
} | tar -c --no-recursion -T - -f - 2>/dev/null | tar -C "$dir" -x
{
	find "$dir/usr/lib/postgresql/$ver" -type f \( -perm -u+x -o -name '*.so' \) -print0 |
		{ xargs -0 ldd 2>/dev/null || true; } | awk '$2 == "=>" && $3 ~ /^\// {print $3}'
	# The loader itself, at the path the binaries name.
	readelf -l "$bin/postgres" | sed -n 's/.*interpreter: \(.*\)]/\1/p'
} | sort -u | tar -c --dereference --no-recursion -T - -f - 2>/dev/null | tar -C "$dir" -x

# pgbench-run init SCALE | run CLIENTS THREADS SECONDS: the whole of one
# measurement in the container: a server on the volume's data directory,
# listening only on its socket, pgbench's initialisation or run, a fast stop.
cat >"$dir/bin/pgbench-run" <<'EOS'
#!/bin/sh
set -e
start() {
	pg_ctl start -w -s -l /tmp/postgres.log -o "-c listen_addresses='' -k /run/postgresql" ||
		{ cat /tmp/postgres.log >&2; exit 1; }
}
stop() { pg_ctl stop -w -s -m fast; }
case "$1" in
init)
	rm -rf "$PGDATA"
	initdb -A trust -U postgres --locale=C -E UTF8 >/dev/null
	start
	pgbench -i -q -s "$2" -h /run/postgresql -U postgres postgres
	stop ;;
run)
	start
	pgbench -n -c "$2" -j "$3" -T "$4" -h /run/postgresql -U postgres postgres
	stop ;;
*) echo "usage: pgbench-run init SCALE | run CLIENTS THREADS SECONDS" >&2; exit 2 ;;
esac
EOS
chmod 0755 "$dir/bin/pgbench-run"

echo 'root:x:0:0:root:/root:/bin/sh' >"$dir/etc/passwd"
echo 'postgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/sh' >>"$dir/etc/passwd"
printf 'root:x:0:\npostgres:x:999:\n' >"$dir/etc/group"
# The volume is mounted here; dockerd copies this folder's owner and mode
# onto an empty volume, so every side gets the same postgres-owned root.
mkdir -p "$dir/var/lib/postgresql/data"
chown -R 999:999 "$dir/var/lib/postgresql" "$dir/run/postgresql"
chmod 0700 "$dir/var/lib/postgresql/data"

say "building $image from Debian's postgresql-$ver ($(dpkg-query -W -f '${Version}' "postgresql-$ver"))"
tar -C "$dir" -c . | docker import \
	--change "ENV PATH=/usr/lib/postgresql/$ver/bin:/bin" \
	--change 'ENV PGDATA=/var/lib/postgresql/data/pgdata' \
	--change 'USER postgres' \
	--change "LABEL holdfast.image-version=$image_version" \
	--message "holdfast bench: Debian's postgresql-$ver" - "$image" >/dev/null
