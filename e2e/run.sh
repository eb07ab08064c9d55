#!/usr/bin/env bash
# e2e/run.sh [go test flags...]: holdfast's end-to-end suite against a real
# dockerd (what `make e2e` runs). Prepares the machine (hack/docker.sh: engine,
# test image, compose), builds the static bin/holdfast and the managed plugin,
# then runs every scenario against the managed plugin and the legacy daemon.
#
#   e2e/run.sh                         # everything
#   e2e/run.sh -run 'TestLegacy/tmpfs' # one scenario, one fixture
#
# Environment: HOLDFAST_E2E_PLUGIN (plugin name, default holdfast; the suite
# replaces that plugin and removes it at the end), HOLDFAST_E2E_CRYPT_OPTS
# (extra crypt options, e.g. engine=fscrypt), HOLDFAST_E2E_KEEP=1 (keep the
# work folders), HOLDFAST_E2E_DIR (parent of the work folders).
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"
start=$(date +%s)
export PATH=$PATH:/usr/local/go/bin

hack/docker.sh up

echo "holdfast/e2e: building bin/holdfast"
if grep -q '^build:' Makefile 2>/dev/null; then
	make build
else
	mkdir -p bin
	CGO_ENABLED=0 go build -trimpath -o bin/holdfast ./cmd/holdfast
fi

plugin/build.sh --rootfs-only

rc=0
HOLDFAST_E2E=1 HOLDFAST_E2E_NO_SETUP=1 go test -v -count=1 -timeout 30m ./e2e/ "$@" || rc=$?
if [ $# -eq 0 ]; then
	echo "holdfast/e2e: the dockerd benchmark (B2) on a small workload, so that make bench keeps working"
	HOLDFAST_BENCH_DOCKER=1 go test -count=1 -run '^TestQuickDocker$' ./internal/bench/ || rc=$?
	echo "holdfast/e2e: restarting dockerd: it keeps the benchmark's legacy driver until it restarts, and docker volume ls would wait 15 s for it"
	hack/docker.sh restart
fi

secs=$(($(date +%s) - start))
printf 'holdfast/e2e: suite wall time %dm%02ds (exit %d)\n' $((secs / 60)) $((secs % 60)) "$rc"
exit "$rc"
