#!/usr/bin/env bash
# deps.sh PKG...: install the Debian packages among PKG that are missing.
# Idempotent: prints what it installs and does nothing when all are present.
set -euo pipefail
missing=()
for p in "$@"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "holdfast: missing Debian packages: ${missing[*]}; run as root or install them" >&2
	exit 1
fi
echo "holdfast: installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
stamp=/var/lib/apt/periodic/holdfast-update-stamp
if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +360)" ]; then
	apt-get update -q >/dev/null
	mkdir -p "$(dirname "$stamp")" && touch "$stamp"
fi
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
