#!/usr/bin/env bash
# vmtest/docker.sh KVER KDIR: prepare dockerd for the guest and print two
# lines: a cpio archive for the initramfs (vmtest/run.sh appends it when
# VMTEST_DOCKER=1) and a folder that run.sh shares with the guest over 9p,
# read-only, as the mount tag "stage".
#
# Debian's docker.io, containerd, runc and tini are fetched with
# `apt-get download` and unpacked with `dpkg-deb -x` under
# $HOLDFAST_CACHE/vm/docker (nothing is installed on the host). The big
# binaries stay in the shared folder (~190 MB: in the initramfs they would
# slow every boot by seconds and pin their size in guest RAM); the archive
# holds their libraries, the modules (9p, overlay, veth, bridge, vxlan...,
# listed in load order in /vmtest/docker/modules), the Swarm's ip, unshare
# and nsenter in /vmtest/docker/bin, and /vmtest/switch-root, which makes
# the guest's /init move its root to a tmpfs (runc's pivot_root fails on
# the initramfs). The folder also has busybox.tar, a root
# filesystem of busybox-static for `docker import`, and docker-compose when
# hack/docker.sh has built compose v2 on this machine.
#
# internal/guestdocker starts dockerd in the guest from these.
set -euo pipefail

kver=$1 kdir=$2
cache=${HOLDFAST_CACHE:-/var/cache/holdfast}/vm/docker
pkgs="docker.io containerd runc tini"
modules="virtio_pci 9pnet_virtio 9p overlay veth bridge br_netfilter vxlan nf_conntrack"
# Libraries dockerd and runc link against; on the host for ldd to find them.
host_libs="iproute2 libseccomp2 libdevmapper1.02.1 libselinux1 libudev1 libpcre2-8-0 libsystemd0 busybox-static"
ns_tools="/usr/sbin/ip /usr/bin/unshare /usr/bin/nsenter"
compose=${HOLDFAST_CACHE:-/var/cache/holdfast}/compose

say() { echo "vmtest: docker: $*" >&2; }
die() { echo "vmtest: docker: error: $*" >&2; exit 2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=vmtest/guestpkgs.sh
. "$here/guestpkgs.sh"
# shellcheck disable=SC2086
"$here/../hack/deps.sh" $host_libs >&2 || die "could not install the host packages $host_libs"
mkdir -p "$cache"

debs=$cache/debs
# shellcheck disable=SC2086
fetch_debs "$debs" $pkgs
rm -f "$debs"/*.deb # 65 MB; the unpacked tree is what is used
root=$debs/root

# The shared folder: binaries by hard link from the unpacked packages.
stage=$cache/stage
if [ ! -e "$stage/.done" ]; then
	say "preparing the shared folder $stage"
	rm -rf "$stage" && mkdir -p "$stage/bin"
	for b in usr/sbin/dockerd usr/bin/containerd usr/bin/containerd-shim-runc-v2 usr/sbin/runc usr/bin/docker; do
		ln "$root/$b" "$stage/bin/" 2>/dev/null || cp "$root/$b" "$stage/bin/"
	done
	cp "$root/usr/bin/tini-static" "$stage/bin/docker-init"
	img=$(mktemp -d "$cache/img.XXXXXX")
	mkdir -p "$img"/{bin,tmp,data,etc,proc,sys,dev}
	cp /usr/bin/busybox "$img/bin/busybox"
	for a in $(/usr/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$img/bin/$a"; done
	printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$img/etc/passwd"
	tar -C "$img" -cf "$stage/busybox.tar" . && rm -rf "$img"
	touch "$stage/.done"
fi
# No $compose before hack/docker.sh compose has run: find fails, and pipefail with it.
c=$(find "$compose" -maxdepth 1 -name 'docker-compose-v2*' -type f 2>/dev/null | sort | tail -n 1 || true)
if [ -n "$c" ] && [ ! -e "$stage/docker-compose" ]; then
	ln "$c" "$stage/docker-compose" 2>/dev/null || cp "$c" "$stage/docker-compose"
fi

build() { # $1 = output cpio
	local st; st=$(mktemp -d "$cache/cpio.tmp.XXXXXX")
	mkdir -p "$st"/usr/{bin,sbin,lib,lib64} "$st"/etc "$st"/vmtest/docker
	for d in bin sbin lib lib64; do ln -s "usr/$d" "$st/$d"; done # as in the base archive
	local f t
	# The Swarm's two nodes need iproute2's ip (netns, veth, bridge) and
	# util-linux's unshare and nsenter: busybox's lack what they need.
	mkdir -p "$st/vmtest/docker/bin"
	for t in $ns_tools; do install -m 755 "$t" "$st/vmtest/docker/bin/"; done
	for f in $(for b in "$stage"/bin/* $ns_tools; do ldd "$b" 2>/dev/null | grep -o '/[^ ]*' || true; done | sort -u); do
		install -D -m 755 "$f" "$st$f"
	done
	printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' 'docker:x:999:' >"$st/etc/group"
	printf 'NAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="12"\nPRETTY_NAME="holdfast vmtest guest"\n' >"$st/etc/os-release"
	touch "$st/vmtest/switch-root"
	# shellcheck disable=SC2086
	pack_modules "$kver" "$kdir" "$st" vmtest/docker/modules $modules
	(cd "$st" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$1.tmp"
	mv "$1.tmp" "$1"
	rm -rf "$st"
}
key=$( {
	echo "$kver"
	cat "${BASH_SOURCE[0]}" "$here/guestpkgs.sh"
	ls -l "$stage/bin"
	dpkg-query -W libc6 $host_libs 2>&1 || true
} | sha256sum | cut -c1-16)
out=$cache/docker-$key.cpio
if [ ! -e "$out" ]; then
	say "building the dockerd archive ($out)"
	rm -f "$cache"/docker-*.cpio
	build "$out"
fi
echo "$out"
echo "$stage"
