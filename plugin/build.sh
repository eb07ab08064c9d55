#!/usr/bin/env bash
# plugin/build.sh [--rootfs-only] [--enable] [NAME]
#
# Builds holdfast's managed Docker plugin from the static bin/holdfast:
#   1. assembles plugin/rootfs (no base image: the binary, mkfs.ext4, mkfs.xfs,
#      cryptsetup and the shared libraries they load) and copies the top-level
#      config.json to plugin/config.json;
#   2. `docker plugin create NAME plugin/` (NAME defaults to holdfast, i.e.
#      holdfast:latest). An existing plugin of that name is replaced when it
#      is disabled, or enabled with no volumes; its settings (mount sources
#      such as state.source, settable env) are carried over. One that is
#      enabled and has volumes is left alone and the script fails.
#
#   --rootfs-only  stop after step 1
#   --enable       enable the plugin after creating it
#
# Environment: HOLDFAST_BIN (default bin/holdfast), HOLDFAST_PLUGIN_TOOLS
# (extra host programs to copy into the rootfs, space separated).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
rootfs_only=false
enable=false
name=
for a in "$@"; do
	case "$a" in
	--rootfs-only) rootfs_only=true ;;
	--enable) enable=true ;;
	-h | --help) sed -n '2,20s/^# \{0,1\}//p' "$0"; exit 0 ;;
	-*) echo "plugin/build.sh: unknown flag $a" >&2; exit 2 ;;
	*) name=$a ;;
	esac
done
name=${name:-holdfast}
bin=${HOLDFAST_BIN:-$top/bin/holdfast}
rootfs=$here/rootfs

say() { echo "holdfast/plugin: $*"; }
die() { echo "holdfast/plugin: ERROR: $*" >&2; exit 1; }

[ -x "$bin" ] || die "$bin missing: run 'make build' first"
if ldd "$bin" >/dev/null 2>&1; then
	die "$bin is dynamically linked; build it with CGO_ENABLED=0 ('make build')"
fi

"$top/hack/deps.sh" e2fsprogs xfsprogs cryptsetup-bin

ref=$name
[[ "${name##*/}" == *:* ]] || ref=$name:latest

$rootfs_only || "$top/hack/docker.sh" engine

# Refuse before building anything: a plugin in use is never replaced.
if ! $rootfs_only && [ "$(docker plugin inspect --format '{{.Enabled}}' "$name" 2>/dev/null)" = true ]; then
	vols=$(docker volume ls -q --filter "driver=$ref" | paste -sd ' ' -)
	if [ -n "$vols" ]; then
		die "plugin $name is enabled and has volumes ($vols); remove them, or build under another name: plugin/build.sh NAME"
	fi
fi

# ---- 1. rootfs -------------------------------------------------------------
tools=(mke2fs mkfs.ext4 mkfs.xfs cryptsetup ${HOLDFAST_PLUGIN_TOOLS:-})

rm -rf "$rootfs"
mkdir -p "$rootfs"/usr/{bin,sbin,lib,lib64}
# A merged-/usr layout like Debian's, so host paths stay valid inside.
ln -s usr/bin "$rootfs/bin"
ln -s usr/sbin "$rootfs/sbin"
ln -s usr/lib "$rootfs/lib"
ln -s usr/lib64 "$rootfs/lib64"
mkdir -p "$rootfs"/{run/docker/plugins,mnt/volumes,var/lib/holdfast,etc/holdfast/keys,tmp,dev,proc,sys}
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/etc/holdfast/keys"

install -m 0755 "$bin" "$rootfs/usr/bin/holdfast"

# copy_file PATH: copy a host file to the same path under the rootfs,
# following symlinks (a merged-/usr host path such as /lib/x lands in usr/lib/x).
copy_file() {
	local src=$1 dst
	dst=$rootfs/${src#/}
	case "$src" in
	/lib/* | /lib64/* | /bin/* | /sbin/*) dst=$rootfs/usr/${src#/} ;;
	esac
	[ -e "$dst" ] && return 0
	mkdir -p "$(dirname "$dst")"
	cp -L --preserve=mode "$src" "$dst"
}

declare -A libs=()
for t in "${tools[@]}"; do
	p=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v "$t" || true)
	[ -n "$p" ] || die "program $t not found on this host"
	copy_file "$p"
	while read -r lib; do
		libs[$lib]=1
	done < <(ldd "$p" 2>/dev/null | sed -n 's/.*=> \(\/[^ ]*\).*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (.*/\1/p')
done
# glibc loads libgcc_s at run time (pthread_cancel, unwinding): ldd does not list it.
gcc_s=$(ldconfig -p | sed -n 's/.*libgcc_s.so.1 (libc6,x86-64) => \(.*\)$/\1/p' | head -n 1)
[ -n "$gcc_s" ] && libs[$gcc_s]=1
for lib in "${!libs[@]}"; do
	copy_file "$lib"
done
[ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$rootfs/etc/mke2fs.conf"
echo 'root:x:0:0:root:/:/bin/false' >"$rootfs/etc/passwd"
echo 'root:x:0:' >"$rootfs/etc/group"

# Check the tools run inside the rootfs (libraries complete).
for t in mke2fs mkfs.xfs cryptsetup; do
	if ! chroot "$rootfs" "/usr/sbin/$t" -V >/dev/null 2>&1 && ! chroot "$rootfs" "/usr/sbin/$t" --version >/dev/null 2>&1; then
		die "$t does not run inside $rootfs (missing library?)"
	fi
done

cp "$top/config.json" "$here/config.json"
say "rootfs ready: $rootfs ($(du -sh "$rootfs" | cut -f1))"
$rootfs_only && exit 0

# ---- 2. docker plugin create -------------------------------------------------

settings=()
was_enabled=false
if enabled=$(docker plugin inspect --format '{{.Enabled}}' "$name" 2>/dev/null); then
	if [ "$enabled" = true ]; then
		vols=$(docker volume ls -q --filter "driver=$ref" | paste -sd ' ' -)
		if [ -n "$vols" ]; then
			die "plugin $name is enabled and has volumes ($vols); remove them, or build under another name: plugin/build.sh NAME"
		fi
		was_enabled=true
		say "disabling plugin $name (enabled, no volumes) to replace it"
		docker plugin disable "$name" >/dev/null
	fi
	# Carry the settings over: mount sources and env values.
	mapfile -t settings < <(docker plugin inspect "$name" --format \
		'{{range .Settings.Mounts}}{{if .Name}}{{.Name}}.source={{.Source}}{{"\n"}}{{end}}{{end}}{{range .Settings.Env}}{{.}}{{"\n"}}{{end}}' | sed '/^$/d')
	say "replacing plugin $name"
	docker plugin rm "$name" >/dev/null
fi

out=$(docker plugin create "$name" "$here" 2>&1) || {
	echo "$out" >&2
	case "$out" in
	*"already exists"*) die "another plugin was created from this exact rootfs; remove it first (docker plugin ls)" ;;
	esac
	die "docker plugin create $name failed"
}
say "created plugin $ref"

if [ ${#settings[@]} -gt 0 ]; then
	settable=$(docker plugin inspect "$name" --format \
		'{{range .Config.Mounts}}{{if .Settable}}{{.Name}}.source {{end}}{{end}}{{range .Config.Env}}{{if .Settable}}{{.Name}} {{end}}{{end}}')
	defaults=$(docker plugin inspect "$name" --format \
		'{{range .Settings.Mounts}}{{.Name}}.source={{.Source}} {{end}}{{range .Settings.Env}}{{.}} {{end}}')
	apply=()
	for s in "${settings[@]}"; do
		k=${s%%=*}
		[[ " $settable " == *" $k "* ]] || continue
		[[ " $defaults " == *" $s "* ]] && continue
		apply+=("$s")
	done
	if [ ${#apply[@]} -gt 0 ]; then
		say "keeping settings: ${apply[*]}"
		docker plugin set "$name" "${apply[@]}"
	fi
fi

if $enable || $was_enabled; then
	# The state folder must exist on the host for the bind mount.
	state=$(docker plugin inspect "$name" --format '{{range .Settings.Mounts}}{{if eq .Name "state"}}{{.Source}}{{end}}{{end}}')
	keys=$(docker plugin inspect "$name" --format '{{range .Settings.Mounts}}{{if eq .Name "keys"}}{{.Source}}{{end}}{{end}}')
	[ -z "$state" ] || mkdir -p "$state"
	[ -z "$keys" ] || [ -d "$keys" ] || install -d -m 0700 "$keys"
	docker plugin enable "$name" >/dev/null
	say "enabled plugin $ref"
else
	say "enable it with: docker plugin enable $name (or plugin/build.sh --enable, which creates the host folders it binds)"
fi
