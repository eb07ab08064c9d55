#!/usr/bin/env bash
# vmtest/build.sh [TEST-FLAGS...]: compile the test binaries of the guest test
# packages statically and run them all in one qemu guest with vmtest/run.sh.
#
#   VMTEST_PKGS  the packages, space separated (default: ./vmtest/selftest)
#   TEST-FLAGS   given to every binary, e.g. -v -run 'LUKS|NFS' (see run.sh)
#
# Example: VMTEST_PKGS='./vmtest/selftest ./driver/crypt' vmtest/build.sh -v
# Exit status is run.sh's (0 pass, 1 test failure, 2-5 harness problems).
set -euo pipefail

VMTEST_PKGS=${VMTEST_PKGS:-./vmtest/selftest}

cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
out=$(mktemp -d "${TMPDIR:-/tmp}/vmtest-bin.XXXXXX")
trap 'rm -rf "$out"' EXIT

bins=()
for pkg in $VMTEST_PKGS; do
	bin=$out/$(echo "${pkg#./}" | tr / _).test
	echo "vmtest: compiling $pkg" >&2
	# Static: the guest has no Go toolchain and no libc for it.
	CGO_ENABLED=0 go test -c -o "$bin" "$pkg"
	if [ -e "$bin" ]; then bins+=("$bin"); else echo "vmtest: $pkg has no test files; skipped" >&2; fi
done
[ ${#bins[@]} -gt 0 ] || { echo "vmtest: error: no test binaries from VMTEST_PKGS=$VMTEST_PKGS" >&2; exit 2; }

# The Docker tests run holdfast itself as dockerd's plugin (vmtest/docker.sh).
case " $VMTEST_PKGS " in *" ./vmtest/docker "*)
	echo "vmtest: building holdfast for dockerd in the guest" >&2
	CGO_ENABLED=0 go build -trimpath -o "$out/holdfast" ./cmd/holdfast
	export VMTEST_DOCKER=1 VMTEST_HOLDFAST=$out/holdfast ;;
esac

# Not exec: the trap removes the binaries once the guest is done with them.
vmtest/run.sh "${bins[@]}" -- "$@"
