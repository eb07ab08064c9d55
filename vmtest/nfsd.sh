#!/usr/bin/env bash
# vmtest/nfsd.sh KVER KDIR: print the path of a cpio archive that adds
# Linux's kernel NFS server to the guest's initramfs (vmtest/run.sh appends
# it after the base archive when VMTEST_NFSD=1, the default).
#
# Debian's nfs-kernel-server, nfs-common, rpcbind and libwrap0 are fetched
# with `apt-get download` and unpacked with `dpkg-deb -x` under
# $HOLDFAST_CACHE/vm/nfsd (nothing is installed on the host); the archive is
# cached under a key covering the packages, the kernel and this script.
#
# In the guest the archive holds the daemons in /usr/sbin, their libraries,
# /etc/passwd and /etc/group with the daemons' users, and
# /vmtest/nfsd/modules: the nfsd module and its dependencies, one .ko path a
# line in load order. Nothing starts a server at boot: internal/nfsd starts
# it the first time a test asks for it, so each test binary is independent.
set -euo pipefail

kver=$1 kdir=$2
cache=${HOLDFAST_CACHE:-/var/cache/holdfast}/vm/nfsd
pkgs="nfs-kernel-server nfs-common rpcbind libwrap0"
bins="rpc.nfsd exportfs rpc.mountd nfsdcltrack rpcbind rpc.statd sm-notify showmount rpcinfo"
modules="sunrpc grace lockd nfs_acl auth_rpcgss nfsd"
# Libraries the daemons link against; on the host for ldd to find them.
host_libs="libtirpc3 libblkid1 libcap2 libkeyutils1 libsqlite3-0 libevent-core-2.1-7 libgssapi-krb5-2 libuuid1"

say() { echo "vmtest: nfsd: $*" >&2; }
die() { echo "vmtest: nfsd: error: $*" >&2; exit 2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=vmtest/guestpkgs.sh
. "$here/guestpkgs.sh"
# shellcheck disable=SC2086
"$here/../hack/deps.sh" $host_libs >&2 || die "could not install the host libraries $host_libs"
mkdir -p "$cache"

debs=$cache/debs
# shellcheck disable=SC2086
fetch_debs "$debs" $pkgs
root=$debs/root

build() { # $1 = output cpio
	local st; st=$(mktemp -d "$cache/cpio.tmp.XXXXXX")
	mkdir -p "$st"/usr/{bin,sbin,lib,lib64} "$st"/etc "$st"/vmtest/nfsd
	for d in bin sbin lib lib64; do ln -s "usr/$d" "$st/$d"; done # as in the base archive
	local b p libs="" f
	for b in $bins; do
		p=$(find "$root"/usr/sbin "$root"/sbin "$root"/usr/bin -name "$b" -type f 2>/dev/null | head -n 1)
		[ -n "$p" ] || die "$b is not in $pkgs"
		install -m 755 "$p" "$st/usr/sbin/$b"
		if LD_LIBRARY_PATH=$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu ldd "$p" | grep -q 'not found'; then
			die "$b needs a library the host lacks: $(ldd "$p" | grep 'not found' | tr -s ' \t' ' ')"
		fi
		libs+=" $(LD_LIBRARY_PATH=$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu ldd "$p" | grep -o '/[^ ]*' || true)"
	done
	for f in $(printf '%s\n' $libs | sort -u); do
		case $f in "$root"/*) install -D -m 755 "$f" "$st/${f#"$root"/}" ;; *) install -D -m 755 "$f" "$st$f" ;; esac
	done
	# Supersets of the base archive's: the daemons drop to these users.
	printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'statd:x:101:65534::/var/lib/nfs:/bin/false' \
		'_rpc:x:102:65534::/run/rpcbind:/bin/false' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$st/etc/passwd"
	printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$st/etc/group"
	printf '%s\n' 'passwd: files' 'group: files' 'hosts: files' 'services: files' 'protocols: files' 'rpc: files' >"$st/etc/nsswitch.conf"
	[ -e /etc/rpc ] && cp /etc/rpc "$st/etc/rpc" || cp "$root/etc/rpc" "$st/etc/rpc" 2>/dev/null || true
	# shellcheck disable=SC2086
	pack_modules "$kver" "$kdir" "$st" vmtest/nfsd/modules $modules
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
out=$cache/nfsd-$key.cpio
if [ ! -e "$out" ]; then
	say "building the kernel NFS server archive ($out)"
	rm -f "$cache"/nfsd-*.cpio
	build "$out"
fi
echo "$out"
