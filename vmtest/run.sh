#!/usr/bin/env bash
# vmtest/run.sh: run static Go test binaries as root inside a qemu guest that
# boots a stock Debian kernel, for tests needing what the host kernel lacks
# (device-mapper/dm-crypt, the NFS client).
#
# Usage: vmtest/run.sh TESTBIN... [-- TEST-FLAGS...]
#   TESTBIN     a static test binary (CGO_ENABLED=0 go test -c); vmtest/build.sh makes them
#   TEST-FLAGS  passed to every binary, e.g. -- -test.v -test.run 'LUKS|NFS'; the
#               go test spelling (-v -run X -count=1) is turned into -test.* too
# Each binary runs in its own empty directory under the guest's /tmp with
# HOLDFAST_VM=1 set. Its output is printed as it comes, followed by a go test
# style line ("ok  <pkg>  1.2s" or "FAIL  <pkg>  1.2s"); the package name comes
# from the binary's build info.
#
# Exit status: 0 all passed, 1 a test binary failed, 2 usage or host setup
# error, 3 the guest never reached /init (kernel panic, boot hang), 4 the guest
# died or stopped during the tests (no "VMTEST RC=" marker), 5 timeout.
#
# Environment:
#   HOLDFAST_CACHE       cache root (default /var/cache/holdfast); this uses $HOLDFAST_CACHE/vm
#   VMTEST_TIMEOUT       seconds before the guest is killed (default 1500)
#   VMTEST_PKG_TIMEOUT   each binary's own deadline, unless TEST-FLAGS set -timeout (default
#                        720s): a test that hangs then panics with every goroutine's stack,
#                        the guest prints its blocked tasks, and the next binary still runs
#   VMTEST_MEM           guest memory in MiB (default 1024)
#   VMTEST_KERNEL        Debian kernel package to boot (default: what linux-image-amd64 depends on)
#   VMTEST_KEEP=1        keep the run directory (initramfs, serial logs) even on success
#   VMTEST_NFSD=0        leave out Linux's NFS server (vmtest/nfsd.sh), which tests start
#   VMTEST_PG=1          add PostgreSQL (vmtest/pg.sh), for make bench's pgbench on LUKS
#   VMTEST_DOCKER=1      add dockerd (vmtest/docker.sh) and VMTEST_HOLDFAST, a static holdfast
#   VMTEST_GUEST_ENV     KEY=VAL words set in the tests' environment in the guest (through the
#                        kernel command line), e.g. HOLDFAST_SOAK=1
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
cache=${HOLDFAST_CACHE:-/var/cache/holdfast}/vm
timeout_s=${VMTEST_TIMEOUT:-1500}
mem=${VMTEST_MEM:-1024}

# Guest contents. Modules are resolved with their dependencies on the host; the
# guest loads each line in order, the lines in parallel (xfs alone takes ~1.5 s).
modules="loop dm-mod dm-crypt dm-log-writes ecb xts cts sha512_generic cryptd crypto_simd aesni-intel crc32c_generic crc32c-intel af_alg algif_skcipher algif_hash jbd2 mbcache crc16 quota_v2 ext4
xfs
sunrpc netfs fscache grace lockd nfs nfs_acl nfsv3 nfsv4"
tools="cryptsetup mke2fs e2fsck resize2fs tune2fs dumpe2fs mkfs.xfs xfs_repair xfs_growfs
	losetup blkid wipefs mount umount dmsetup"
etcfiles="/etc/mke2fs.conf /etc/protocols /etc/services /etc/netconfig"
host_pkgs="qemu-system-x86 busybox-static cryptsetup-bin e2fsprogs xfsprogs kmod cpio util-linux
	xz-utils netbase libtirpc-common dmsetup"

say() { echo "vmtest: $*" >&2; }
die() { local rc=$1; shift; echo "vmtest: error: $*" >&2; exit "$rc"; }
usage() { sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2; exit 2; }

bins=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do
	case $1 in -h|--help) usage ;; esac
	bins+=("$1"); shift
done
[ $# -gt 0 ] && shift
[ ${#bins[@]} -gt 0 ] || usage
for b in "${bins[@]}"; do
	[ -f "$b" ] && [ -x "$b" ] || die 2 "$b: not an executable file"
	# A dynamic binary would not find its libc in the guest.
	! ldd "$b" >/dev/null 2>&1 || die 2 "$b: dynamically linked; build it with CGO_ENABLED=0"
done
[ "$(id -u)" -eq 0 ] || die 2 "must run as root (installs packages, writes $cache)"
for w in ${VMTEST_GUEST_ENV:-}; do
	[[ $w =~ ^[A-Z_][A-Z0-9_]*=[^\ ]*$ ]] || die 2 "VMTEST_GUEST_ENV: $w is not a KEY=VALUE word (upper-case key, no spaces)"
done

say "checking host packages"
# shellcheck disable=SC2086
"$repo/hack/deps.sh" $host_pkgs || die 2 "could not install host packages"
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9 # one user of the shared cache at a time; released before booting

kernel_pkg() {
	apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }'
}
kpkg=${VMTEST_KERNEL:-$(kernel_pkg)}
if [ -z "$kpkg" ]; then
	say "updating apt lists to find the kernel package"
	apt-get update -q >/dev/null
	kpkg=$(kernel_pkg)
fi
[ -n "$kpkg" ] || die 2 "apt-cache depends linux-image-amd64 names no kernel package"
kver=${kpkg#linux-image-}
kdir=$cache/kernel/$kver
if [ ! -e "$kdir/.done" ]; then
	say "downloading kernel $kpkg"
	tmp=$(mktemp -d "$cache/kernel.tmp.XXXXXX")
	chown _apt "$tmp" 2>/dev/null || true # else apt warns that it cannot sandbox the download
	if ! (cd "$tmp" && apt-get download -q "$kpkg" >/dev/null 2>&1); then
		# Debian removes superseded kernels from the mirror; fresh lists name the current one.
		say "download failed; updating apt lists and retrying"
		apt-get update -q >/dev/null
		(cd "$tmp" && apt-get download -q "$kpkg" >/dev/null) || die 2 "apt-get download $kpkg failed"
	fi
	say "unpacking kernel $kver and running depmod"
	dpkg-deb -x "$tmp"/*.deb "$tmp/root"
	depmod -b "$tmp/root" "$kver"
	rm -rf "$kdir" && mkdir -p "$cache/kernel" && mv "$tmp/root" "$kdir" && rm -rf "$tmp"
	touch "$kdir/.done"
	find "$cache/kernel" -mindepth 1 -maxdepth 1 ! -name "$kver" -exec rm -rf {} + # old kernels
fi
# qemu boots an uncompressed ELF kernel through its PVH entry, which skips
# SeaBIOS and the xz decompression under TCG (~3 s of every boot). The bzImage
# stays the fallback when the kernel has no PVH entry or another compression.
vmlinuz=$kdir/boot/vmlinuz-$kver
if [ ! -e "$kdir/boot/vmlinux" ] && [ ! -e "$kdir/boot/.no-pvh" ]; then
	say "extracting the uncompressed kernel for PVH boot"
	off=$(grep -abo $'\xfd7zXZ\x00' "$vmlinuz" | head -n 1 | cut -d: -f1 || true)
	if [ -n "$off" ] && grep -q '^CONFIG_PVH=y' "$kdir/boot/config-$kver"; then
		tail -c +$((off + 1)) "$vmlinuz" >"$kdir/boot/vmlinux.xz"
		# xz complains about the bzImage bytes after the stream but has written it all.
		xz -dc "$kdir/boot/vmlinux.xz" >"$kdir/boot/vmlinux.tmp" 2>/dev/null || true
		rm -f "$kdir/boot/vmlinux.xz"
	fi
	if [ -s "$kdir/boot/vmlinux.tmp" ] && [ "$(head -c 4 "$kdir/boot/vmlinux.tmp")" = $'\x7fELF' ]; then
		mv "$kdir/boot/vmlinux.tmp" "$kdir/boot/vmlinux"
	else
		say "no PVH-bootable kernel in $vmlinuz; booting the bzImage"
		rm -f "$kdir/boot/vmlinux.tmp" && touch "$kdir/boot/.no-pvh"
	fi
fi

# The base initramfs (busybox, tools, libraries, modules) is cached under a key
# covering everything that goes into it, including this function's own text.
build_base() { # $1 = output cpio
	local st; st=$(mktemp -d "$cache/base.tmp.XXXXXX")
	mkdir -p "$st"/usr/{bin,sbin,lib,lib64} "$st"/{dev,proc,sys,tmp,run,etc,root,mnt}
	for d in bin sbin lib lib64; do ln -s "usr/$d" "$st/$d"; done # Debian 12 is merged-/usr
	cp /usr/bin/busybox "$st/usr/bin/busybox"
	local t p f libs=""
	for t in $tools; do
		p=$(command -v "$t") || die 2 "host tool $t not found"
		install -D -m 755 "$p" "$st/usr/sbin/$t"
		libs+=" $(ldd "$p" | grep -o '/[^ ]*' || true)"
	done
	ln -s mke2fs "$st/usr/sbin/mkfs.ext4"; ln -s e2fsck "$st/usr/sbin/fsck.ext4"
	# glibc dlopens libgcc_s for pthread_exit/cancellation; cryptsetup aborts without it.
	for f in $(printf '%s\n' $libs /lib/x86_64-linux-gnu/libgcc_s.so.1 /lib64/ld-linux-x86-64.so.2 | sort -u); do
		install -D -m 755 "$f" "$st$f"
	done
	for f in $etcfiles; do [ -e "$f" ] && cp "$f" "$st/etc/"; done
	printf 'root:x:0:0:root:/root:/bin/sh\n' >"$st/etc/passwd"
	printf 'root:x:0:\n' >"$st/etc/group"
	printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$st/etc/hosts"
	local m ko
	for m in $modules; do
		modprobe -d "$kdir" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
	done | sort -u | while read -r ko; do
		install -D -m 644 "$ko" "$st/usr/lib/modules/$kver/${ko#"$kdir"/lib/modules/"$kver"/}"
	done
	cp "$kdir/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$st/usr/lib/modules/$kver/"
	depmod -b "$st" "$kver"
	echo "$modules" >"$st/etc/vmtest-modules"
	(cd "$st" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) >"$1.tmp"
	mv "$1.tmp" "$1"
	rm -rf "$st"
}
base_key=$( {
	echo "$kver"
	declare -f build_base
	echo "$modules $tools $etcfiles"
	dpkg-query -W busybox-static cryptsetup-bin e2fsprogs xfsprogs util-linux mount libc6 libgcc-s1 dmsetup 2>&1 || true
} | sha256sum | cut -c1-16)
base=$cache/initramfs-base-$base_key.cpio
if [ ! -e "$base" ]; then
	say "building base initramfs for $kver ($base)"
	rm -f "$cache"/initramfs-base-*.cpio
	build_base "$base"
fi

# Archives appended after the base one, each built and cached by its own
# script: vmtest/nfsd.sh, Linux's NFS server (skip it with VMTEST_NFSD=0).
extras=()
if [ "${VMTEST_NFSD:-1}" = 1 ]; then
	extras+=("$("$here/nfsd.sh" "$kver" "$kdir")") || die 2 "vmtest/nfsd.sh failed"
fi
if [ "${VMTEST_PG:-0}" = 1 ]; then
	extras+=("$("$here/pg.sh" "$kver" "$kdir")") || die 2 "vmtest/pg.sh failed"
fi
# vmtest/docker.sh (VMTEST_DOCKER=1): dockerd's libraries and modules in an
# archive, its binaries in a folder shared over 9p, holdfast from
# $VMTEST_HOLDFAST in the overlay; the guest's root moves to a tmpfs.
qemu_extra=()
if [ "${VMTEST_DOCKER:-0}" = 1 ]; then
	[ -x "${VMTEST_HOLDFAST:-}" ] || die 2 "VMTEST_DOCKER=1 needs VMTEST_HOLDFAST, a static holdfast binary"
	dout=$("$here/docker.sh" "$kver" "$kdir") || die 2 "vmtest/docker.sh failed"
	extras+=("$(sed -n 1p <<<"$dout")")
	qemu_extra+=(-virtfs "local,path=$(sed -n 2p <<<"$dout"),mount_tag=stage,security_model=none,readonly=on")
fi

run=$(mktemp -d "${TMPDIR:-/tmp}/vmtest.XXXXXX")
cleanup() { [ "${VMTEST_KEEP:-}" = 1 ] || [ -e "$run/keep" ] || rm -rf "$run"; }
trap cleanup EXIT

say "packing ${#bins[@]} test binary(ies) into the initramfs"
ov=$run/overlay
mkdir -p "$ov/vmtest/bin"
command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin # only to name the packages
names=()
i=0
for b in "${bins[@]}"; do
	name=$(go version -m "$b" 2>/dev/null | awk '$1 == "path" { sub(/\.test$/, "", $2); print $2; exit }' || true)
	names+=("${name:-$(basename "$b" .test)}")
	cp "$b" "$ov/vmtest/bin/$i"
	echo "$i" >>"$ov/vmtest/list"
	i=$((i + 1))
done
[ "${VMTEST_DOCKER:-0}" != 1 ] || cp "$VMTEST_HOLDFAST" "$ov/vmtest/holdfast"
# Quote for the guest's sh: each flag in single quotes, embedded ' as '\''.
has_timeout=0
for a in "$@"; do
	case $a in -test.* | --test.* | - | --) ;; --?* | -?*) a=-test.${a#"${a%%[!-]*}"} ;; esac
	case $a in -test.timeout*) has_timeout=1 ;; esac
	printf "'%s' " "${a//\'/\'\\\'\'}"
done >"$ov/vmtest/args"
[ $has_timeout = 1 ] || printf "'-test.timeout=%s' " "${VMTEST_PKG_TIMEOUT:-720s}" >>"$ov/vmtest/args"
cat >"$ov/init" <<'EOF'
#!/bin/busybox sh
# Kernel messages go to ttyS0 (the console log); test output goes to ttyS1,
# which the host streams, so the two never interleave.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp HOLDFAST_VM=1
if [ -e /vmtest/switch-root ] && [ ! -e /.vmtest-switched ]; then
	# runc's pivot_root fails on the initramfs: copy it to a tmpfs and move there.
	/bin/busybox mkdir /newroot
	/bin/busybox mount -t tmpfs -o mode=755 tmpfs /newroot
	for f in /*; do [ "$f" = /newroot ] || /bin/busybox cp -a "$f" /newroot/; done
	/bin/busybox touch /newroot/.vmtest-switched
	exec /bin/busybox switch_root /newroot /init
fi
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/cryptsetup /run/lock
ip link set lo up
out=/dev/ttyS1
stty -F $out raw -echo 2>/dev/null
echo "VMTEST BOOTED" >$out
while read -r group; do
	for m in $group; do modprobe "$m" >$out 2>&1 || echo "vmtest: guest: modprobe $m failed" >$out; done &
done </etc/vmtest-modules
wait
eval "set -- $(cat /vmtest/args)"
rc=0
for i in $(cat /vmtest/list); do
	dir=$(mktemp -d /tmp/test.XXXXXX)
	t0=$(cut -d' ' -f1 /proc/uptime)
	echo "VMTEST START $i" >$out
	(cd "$dir" && exec /vmtest/bin/$i "$@") </dev/null >$out 2>&1
	r=$?
	t1=$(cut -d' ' -f1 /proc/uptime)
	if [ $r -ne 0 ]; then
		rc=1
		# What the kernel was waiting for, when a test hung on it (D state).
		echo w >/proc/sysrq-trigger 2>/dev/null
		echo "vmtest: guest: $i failed ($r); the kernel's last messages, blocked tasks included:" >$out
		dmesg | tail -n 80 >$out
	fi
	echo "VMTEST END $i $r $(awk "BEGIN { printf \"%.3f\", $t1 - $t0 }")" >$out
done
echo "VMTEST RC=$rc" >$out
echo "VMTEST RC=$rc"
poweroff -f
EOF
chmod 755 "$ov/init"
(cd "$ov" && find . | cpio -o -H newc -R 0:0 --quiet) >"$run/overlay.cpio"
# The kernel unpacks concatenated cpio archives in order, overlay last.
cat "$base" ${extras[@]+"${extras[@]}"} "$run/overlay.cpio" >"$run/initramfs.cpio"
rm -rf "$ov" "$run/overlay.cpio"
flock -u 9

# Streams the guest's ttyS1: test output passes through unchanged, markers
# become go test summary lines. Raw output is kept in out.log.
stream() {
	local line marker idx r secs
	while IFS= read -r line || [ -n "$line" ]; do
		line=${line%$'\r'}
		printf '%s\n' "$line" >>"$run/out.log"
		# A marker may follow output that lacked its final newline.
		marker=VMTEST\ ${line#*VMTEST }
		case $marker in
		"VMTEST BOOTED" | "VMTEST START "* | "VMTEST RC="* | "VMTEST END "*)
			[ -z "${line%%VMTEST *}" ] || printf '%s\n' "${line%%VMTEST *}" ;;
		*) printf '%s\n' "$line"; continue ;;
		esac
		case $marker in
		"VMTEST END "*)
			read -r _ _ idx r secs <<<"$marker"
			if [ "$r" = 0 ]; then
				printf 'ok  \t%s\t%ss\n' "${names[$idx]}" "$secs"
			else
				printf 'FAIL\t%s\t%ss\n' "${names[$idx]}" "$secs"
			fi ;;
		esac
	done
}

kernel=$kdir/boot/vmlinux
[ -e "$kernel" ] || kernel=$vmlinuz
say "booting $kver under qemu (TCG, timeout ${timeout_s}s)"
start=$SECONDS
set +e
timeout -k 10 "$timeout_s" qemu-system-x86_64 \
	-accel tcg,thread=multi -cpu max -smp 2 -m "$mem" \
	-nographic -nodefaults -no-reboot -monitor none -nic none \
	-kernel "$kernel" -initrd "$run/initramfs.cpio" ${qemu_extra[@]+"${qemu_extra[@]}"} \
	-append "console=ttyS0 earlyprintk=ttyS0 quiet loglevel=3 panic=-1 oops=panic${VMTEST_GUEST_ENV:+ $VMTEST_GUEST_ENV}" \
	-serial "file:$run/console.log" -serial stdio \
	</dev/null 2>"$run/qemu.err" | stream
qrc=${PIPESTATUS[0]}
set -e
elapsed=$((SECONDS - start))

fail() { # $1 = exit code, rest = message
	local rc=$1; shift
	touch "$run/keep" && rm -f "$run/initramfs.cpio"
	echo "vmtest: error: $*" >&2
	# Strip the firmware's terminal escapes; the panic headline may be above the tail.
	sed -i 's/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g' "$run/console.log" || true
	grep -m 3 -E 'Kernel panic|BUG:|Oops:|general protection' "$run/console.log" | sed 's/^/vmtest: console: /' >&2 || true
	echo "vmtest: last 40 lines of the guest console ($run/console.log):" >&2
	tail -n 40 "$run/console.log" >&2 || true
	echo >&2
	[ ! -s "$run/qemu.err" ] || { echo "vmtest: qemu stderr:" >&2; cat "$run/qemu.err" >&2; }
	exit "$rc"
}
touch "$run/out.log"
marker=$(grep -o 'VMTEST RC=[0-9]*' "$run/out.log" | tail -n 1 || true)
if [ -n "$marker" ]; then
	rc=${marker#VMTEST RC=}
	say "guest finished in ${elapsed}s: RC=$rc"
	exit "$rc"
fi
running=$(grep -o 'VMTEST START [0-9]*' "$run/out.log" | tail -n 1 | awk '{ print $3 }' || true)
what=${running:+ while running ${names[$running]}}
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
	fail 5 "timeout: the guest was killed after ${timeout_s}s$what (raise VMTEST_TIMEOUT?)"
elif ! grep -q 'VMTEST BOOTED' "$run/out.log"; then
	fail 3 "the guest never reached /init (qemu exit $qrc after ${elapsed}s): kernel panic or boot failure"
else
	fail 4 "the guest stopped without a VMTEST RC= marker$what (qemu exit $qrc after ${elapsed}s): crash or kernel panic"
fi
