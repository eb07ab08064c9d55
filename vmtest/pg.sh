#!/usr/bin/env bash
# vmtest/pg.sh KVER KDIR: print the path of a cpio archive that adds
# PostgreSQL to the guest's initramfs (vmtest/run.sh appends it when
# VMTEST_PG=1; make bench's guest part uses it for pgbench on LUKS).
#
# Debian's postgresql-15, postgresql-client-15 and libpq5 are fetched with
# `apt-get download` and unpacked with `dpkg-deb -x` under
# $HOLDFAST_CACHE/vm/pg (nothing is installed on the host by this script);
# the archive is cached under a key covering the packages and this script.
# It holds /usr/lib/postgresql/VER (postgres, initdb, pg_ctl, pgbench and
# the server's modules), /usr/share/postgresql/VER without manuals, the UTC
# zone (TZ=UTC), and the libraries all of them link, from the host as ldd finds
# them (libpq from the packages). Nothing starts a server at boot.
set -euo pipefail

kver=$1 kdir=$2
cache=${HOLDFAST_CACHE:-/var/cache/holdfast}/vm/pg
ver=15
pkgs="postgresql-$ver postgresql-client-$ver libpq5"
bins="postgres initdb pg_ctl pgbench"
# Libraries the server links against; on the host for ldd to find them.
host_libs="libicu72 libxml2 libxslt1.1 libssl3 libldap-2.5-0 libgssapi-krb5-2 libsystemd0 liblz4-1 libzstd1 libpam0g libselinux1 libedit2 libuuid1 tzdata"

say() { echo "vmtest: pg: $*" >&2; }
die() { echo "vmtest: pg: error: $*" >&2; exit 2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=vmtest/guestpkgs.sh
. "$here/guestpkgs.sh"
# shellcheck disable=SC2086
"$here/../hack/deps.sh" $host_libs cpio >&2 || die "could not install the host packages $host_libs cpio"
mkdir -p "$cache"

debs=$cache/debs
# shellcheck disable=SC2086
fetch_debs "$debs" $pkgs
root=$debs/root
pgdir=usr/lib/postgresql/$ver
libpath=$root/usr/lib/x86_64-linux-gnu

build() { # $1 = output cpio
	local st; st=$(mktemp -d "$cache/cpio.tmp.XXXXXX")
	mkdir -p "$st"/usr/{bin,sbin,lib,lib64,share/zoneinfo} "$st/$pgdir/bin"
	for d in bin sbin lib lib64; do ln -s "usr/$d" "$st/$d"; done # as in the base archive
	local b f objs=()
	for b in $bins; do
		[ -f "$root/$pgdir/bin/$b" ] || die "$b is not in $pkgs"
		install -m 755 "$root/$pgdir/bin/$b" "$st/$pgdir/bin/$b"
		objs+=("$root/$pgdir/bin/$b")
	done
	# The server's modules (plpgsql, the snowball dictionaries initdb
	# loads) but not the LLVM JIT, which would pull 100 MB of LLVM.
	mkdir -p "$st/$pgdir/lib"
	for f in "$root/$pgdir"/lib/*.so; do
		case $f in */llvmjit*.so) continue ;; esac
		install -m 644 "$f" "$st/$pgdir/lib/"
		objs+=("$f")
	done
	(cd "$root" && find "usr/share/postgresql/$ver" -path '*/man' -prune -o -print | cpio -pdm --quiet "$st")
	mkdir -p "$st/usr/share/zoneinfo/Etc"
	for f in UTC GMT Etc/UTC; do cp -L "/usr/share/zoneinfo/$f" "$st/usr/share/zoneinfo/$f"; done
	if LD_LIBRARY_PATH=$libpath ldd "${objs[@]}" | grep -q 'not found'; then
		die "PostgreSQL needs a library the host lacks: $(LD_LIBRARY_PATH=$libpath ldd "${objs[@]}" | grep 'not found' | sort -u | tr -s ' \t' ' ')"
	fi
	for f in $(LD_LIBRARY_PATH=$libpath ldd "${objs[@]}" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' | sort -u); do
		case $f in "$root"/*) install -D -m 755 "$f" "$st/${f#"$root"/}" ;; *) install -D -m 755 "$(readlink -f "$f")" "$st$f" ;; esac
	done
	(cd "$st" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$1.tmp"
	mv "$1.tmp" "$1"
	rm -rf "$st"
}
key=$( {
	echo "$kver"
	cat "${BASH_SOURCE[0]}" "$here/guestpkgs.sh"
	ls "$debs"/*.deb
	dpkg-query -W libc6 $host_libs 2>&1 || true
} | sha256sum | cut -c1-16)
out=$cache/pg-$key.cpio
if [ ! -e "$out" ]; then
	say "building the PostgreSQL archive ($out)"
	rm -f "$cache"/pg-*.cpio
	build "$out"
fi
echo "$out"
