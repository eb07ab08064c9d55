# vmtest/guestpkgs.sh: sourced by vmtest/nfsd.sh and vmtest/docker.sh, what
# both do to put Debian packages and kernel modules into the guest. The
# sourcing script defines say and die; its cache key covers this file.

# fetch_debs DEBS PKGS...: once per machine, `apt-get download` PKGS (the
# apt lists updated and the download retried if it fails: Debian drops
# superseded versions) and unpack them with `dpkg-deb -x` into DEBS/root;
# the .deb files stay in DEBS. Nothing is installed on the host.
fetch_debs() {
	local debs=$1 tmp d
	shift
	[ ! -e "$debs/.done" ] || return 0
	say "downloading $*"
	tmp=$(mktemp -d "$debs.tmp.XXXXXX")
	chown _apt "$tmp" 2>/dev/null || true # else apt warns that it cannot sandbox the download
	if ! (cd "$tmp" && apt-get download -q "$@" >/dev/null 2>&1); then
		say "download failed; updating apt lists and retrying"
		apt-get update -q >/dev/null
		(cd "$tmp" && apt-get download -q "$@" >/dev/null) || die "apt-get download $* failed"
	fi
	mkdir "$tmp/root"
	for d in "$tmp"/*.deb; do dpkg-deb -x "$d" "$tmp/root"; done
	rm -rf "$debs" && mv "$tmp" "$debs" && touch "$debs/.done"
}

# pack_modules KVER KDIR ST LIST MODULES...: copy MODULES and what they
# depend on from the kernel tree KDIR into the archive tree ST, and append
# each .ko's path in the guest to ST/LIST, in load order (internal/guest's
# LoadModules insmods them).
pack_modules() {
	local kver=$1 kdir=$2 st=$3 list=$4 m ko rel
	shift 4
	mkdir -p "$(dirname "$st/$list")"
	for m in "$@"; do
		modprobe -d "$kdir" -S "$kver" --show-depends "$m" 2>/dev/null | awk '$1 == "insmod" { print $2 }'
	done | awk '!seen[$0]++' | while read -r ko; do
		rel=${ko#"$kdir"/}
		install -D -m 644 "$ko" "$st/$rel"
		echo "/$rel" >>"$st/$list"
	done
}
