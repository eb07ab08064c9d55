#!/usr/bin/env bash
# e2e/run.sh [go test flags...]: holdfast's end-to-end suite against real
# dockerds (what `make e2e` runs). Prepares the machine (hack/docker.sh: engine,
# test image, compose), builds the static bin/holdfast and the managed plugin,
# then runs every scenario against the managed plugin and the legacy daemon,
# once per engine:
#
#   20.10  Debian's dockerd (docker.io), on the default socket;
#   28     dockerd 28.5.2 built once from its Go module source (hack/dockerd28.sh,
#          cached under /var/cache/holdfast; the build runs in the background
#          during the 20.10 suite), with its own data root and socket.
#
# The engines take turns: both look for plugins in /run/docker/plugins, so
# dockerd 20.10 is stopped while 28 runs, and started again afterwards (also
# when the run fails or is interrupted). Everything runs under
# flock /tmp/holdfast-e2e.lock, which every script that starts or stops the
# host's dockerd takes.
#
#   e2e/run.sh                         # everything, both engines
#   e2e/run.sh -run 'TestLegacy/tmpfs' # one scenario, one fixture, both engines
#   HOLDFAST_E2E_ENGINES=20.10 e2e/run.sh
#
# Environment: HOLDFAST_E2E_ENGINES (default "20.10 28"), HOLDFAST_E2E_28_RUN
# (a -run pattern for the 28 suite when no flags are given; default: all),
# HOLDFAST_E2E_PLUGIN (plugin name, default holdfast; the suite replaces that
# plugin and removes it at the end), HOLDFAST_E2E_CRYPT_OPTS (extra crypt
# options, e.g. engine=fscrypt), HOLDFAST_E2E_KEEP=1 (keep the work folders),
# HOLDFAST_E2E_DIR (parent of the work folders).
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
lock=${HOLDFAST_E2E_LOCK:-/tmp/holdfast-e2e.lock}
# lock_holders lists the processes that have the lock file open (pid and command).
lock_holders() {
	local p
	for p in /proc/[0-9]*; do
		ls -l "$p/fd" 2>/dev/null | grep -q " -> $lock\$" &&
			echo "${p#/proc/} $(tr '\0' ' ' <"$p/cmdline" 2>/dev/null | cut -c1-100)"
	done
	return 0
}
if [ "${HOLDFAST_E2E_LOCKED:-}" != 1 ]; then
	if ! flock -n "$lock" true; then
		holders=$(lock_holders)
		echo "holdfast/e2e: waiting for $lock, held by:"
		echo "$holders" | sed 's|^|holdfast/e2e:   |'
		if ! echo "$holders" | grep -Evq '^[0-9]+ (dockerd|containerd|/[^ ]*/(dockerd|containerd))[ -]'; then
			echo "holdfast/e2e: only dockerd/containerd hold it: a script started them under the lock and they inherited its" \
				"descriptor (hack/docker.sh before f5ad0ed). Nothing is in a critical section; 'hack/docker.sh restart' releases it."
		fi
	fi
	# -o: flock keeps the lock itself and the command does not inherit it, so no
	# dockerd started below can hold it after we are done.
	exec flock -o "$lock" env HOLDFAST_E2E_LOCKED=1 "$0" "$@"
fi
cd "$top"
start=$(date +%s)
export PATH=$PATH:/usr/local/go/bin
engines=${HOLDFAST_E2E_ENGINES:-20.10 28}
for e in $engines; do
	case "$e" in 20.10 | 28) ;; *) echo "holdfast/e2e: HOLDFAST_E2E_ENGINES: unknown engine $e (want 20.10, 28)" >&2; exit 2 ;; esac
done
has28=false
[[ " $engines " == *" 28 "* ]] && has28=true
work=$(mktemp -d /tmp/holdfast-e2e-run.XXXXXX)

hms() { printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); }

# Whether the host's dockerd answered before we began: it is left as found
# (running), and started again if we stopped it.
host_was_running=false
timeout 10 docker version >/dev/null 2>&1 && host_was_running=true
host_stopped=false
build_pid=
cleanup() {
	local rc=$?
	if [ -n "$build_pid" ] && kill -0 "$build_pid" 2>/dev/null; then
		echo "holdfast/e2e: stopping the dockerd 28 build (pid $build_pid); the next run starts it again"
		kill -TERM -- "-$build_pid" 2>/dev/null || kill -TERM "$build_pid" 2>/dev/null || true
	fi
	if $host_stopped; then
		HOLDFAST_ENGINE=28 hack/docker.sh stop || true
		echo "holdfast/e2e: starting the host's dockerd 20.10 again"
		hack/docker.sh engine || rc=1
	fi
	rm -rf "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The dockerd 28 build (5-10 min on 2 cores the first time, ~900 MB of
# modules to download) runs in the background from here on: beside apt, the
# compose build and the 20.10 suite, which mostly waits on dockerd and
# containers.
build_start=$(date +%s)
if $has28; then
	if [ -x "$(hack/dockerd28.sh binary)" ]; then
		echo "holdfast/e2e: dockerd 28 is built ($(hack/dockerd28.sh binary))"
	else
		echo "holdfast/e2e: building dockerd 28 in the background (log: $work/dockerd28-build.out)"
		setsid hack/dockerd28.sh build >"$work/dockerd28-build.out" 2>&1 </dev/null &
		build_pid=$!
	fi
fi

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
results=()
# suite ENGINE [go test flags]: one go test run against the engine DOCKER_HOST
# points at; its result line goes into results.
suite() {
	local engine=$1 s out code=0 line
	shift
	s=$(date +%s)
	echo "holdfast/e2e: [$engine] dockerd answers ($(docker version --format '{{.Server.Version}}, API {{.Server.APIVersion}}'))"
	out=$work/go-test-$engine.out
	HOLDFAST_E2E=1 HOLDFAST_E2E_NO_SETUP=1 go test -v -count=1 -timeout 30m ./e2e/ "$@" 2>&1 | tee "$out" || code=$?
	line=$(grep -E '^(ok|FAIL)[[:space:]]' "$out" | tail -n 1 || true)
	[ -n "$line" ] || line="go test exited $code"
	results+=("[$engine] $(docker version --format '{{.Server.Version}}'): $line (suite $(hms $(($(date +%s) - s))))")
	[ "$code" = 0 ] || rc=1
}

if [[ " $engines " == *" 20.10 "* ]]; then
	suite 20.10 "$@"
	if [ $# -eq 0 ]; then
		echo "holdfast/e2e: the dockerd benchmark (B2) on a small workload, so that make bench keeps working"
		HOLDFAST_BENCH_DOCKER=1 go test -count=1 -run '^TestQuickDocker$' ./internal/bench/ || rc=1
		echo "holdfast/e2e: restarting dockerd: it keeps the benchmark's legacy driver until it restarts, and docker volume ls would wait 15 s for it"
		hack/docker.sh restart
	fi
fi

if $has28; then
	if [ -n "$build_pid" ]; then
		echo "holdfast/e2e: waiting for the dockerd 28 build"
		if wait "$build_pid"; then
			cat "$work/dockerd28-build.out"
			build_pid=
		else
			cat "$work/dockerd28-build.out" >&2
			build_pid=
			echo "holdfast/e2e: ERROR: the dockerd 28 build failed" >&2
			exit 1
		fi
		echo "holdfast/e2e: dockerd 28 build finished $(hms $(($(date +%s) - build_start))) after it started"
	fi
	if timeout 10 docker version >/dev/null 2>&1; then
		echo "holdfast/e2e: stopping the host's dockerd 20.10 while dockerd 28 runs (both serve /run/docker/plugins)"
		host_stopped=true
		hack/docker.sh stop
	fi
	export HOLDFAST_ENGINE=28 HOLDFAST_DOCKERD_LOG=/var/log/holdfast-dockerd28.log
	eval "export $(hack/dockerd28.sh env)"
	hack/docker.sh stop || true
	hack/dockerd28.sh reset
	hack/docker.sh up
	args=("$@")
	if [ $# -eq 0 ] && [ -n "${HOLDFAST_E2E_28_RUN:-}" ]; then
		args=(-run "$HOLDFAST_E2E_28_RUN")
	fi
	suite 28 "${args[@]}"
	hack/docker.sh stop
	unset HOLDFAST_ENGINE HOLDFAST_DOCKERD_LOG DOCKER_HOST
	if $host_stopped; then
		echo "holdfast/e2e: starting the host's dockerd 20.10 again"
		hack/docker.sh engine
		host_stopped=false
	fi
fi
$host_was_running || echo "holdfast/e2e: the host's dockerd was not running before; it stays running (hack/docker.sh stop stops it)"

for r in "${results[@]}"; do
	echo "holdfast/e2e: $r"
done
printf 'holdfast/e2e: suite wall time %s (exit %d)\n' "$(hms $(($(date +%s) - start)))" "$rc"
exit "$rc"
