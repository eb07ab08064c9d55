#!/usr/bin/env bash
# dockerd28.sh [build|start|stop|status|env]
#
# A current Docker engine (dockerd 28.5.2, built from its Go module source) next
# to Debian's dockerd 20.10, for holdfast's end-to-end suite. It uses its own
# data root, exec root, socket and pidfile, and the host's containerd and runc
# (from docker.io). Every step is idempotent.
#
#   build   build dockerd once per machine into the cache (~5 min on 2 cores,
#           ~1.3 GB memory, ~900 MB of module cache); later calls do nothing
#   start   build if needed, then start it unless it answers on its socket
#   stop    stop the dockerd this script started (by its pidfile)
#   status  print whether it runs and what it answers
#   env     print the DOCKER_HOST line that talks to it
#   binary  print the cached binary's path (it may not exist yet)
#
# start and stop do not touch the host's dockerd: e2e/run.sh stops 20.10 before
# it starts this one (both look for legacy plugins in /run/docker/plugins and
# would answer for the same socket) and restarts 20.10 afterwards.
#
# Environment:
#   HOLDFAST_CACHE            cache folder (default /var/cache/holdfast)
#   HOLDFAST_DOCKERD28_VERSION module version (default v28.5.2+incompatible)
#   HOLDFAST_DOCKERD28_ROOT   state folder: data-root, exec-root, socket, pidfile
#                             (default /var/lib/holdfast-dockerd28)
#   HOLDFAST_DOCKERD28_LOG    log file (default /var/log/holdfast-dockerd28.log)
set -euo pipefail

cache=${HOLDFAST_CACHE:-/var/cache/holdfast}
modver=${HOLDFAST_DOCKERD28_VERSION:-v28.5.2+incompatible}
ver=${modver#v}
ver=${ver%+incompatible}
root=${HOLDFAST_DOCKERD28_ROOT:-/var/lib/holdfast-dockerd28}
log=${HOLDFAST_DOCKERD28_LOG:-/var/log/holdfast-dockerd28.log}
bin="$cache/dockerd/dockerd-$ver"
# The exec root holds containerd's socket: keep its path short (sun_path is 108 bytes).
execroot=/run/holdfast-dockerd28
sock="$execroot/docker.sock"
pidfile="$execroot/dockerd.pid"

say() { echo "holdfast/dockerd28: $*"; }
die() { echo "holdfast/dockerd28: ERROR: $*" >&2; exit 1; }

export DOCKER_HOST="unix://$sock"

answers() { timeout 10 docker version >/dev/null 2>&1; }

build() {
	if [ -x "$bin" ]; then
		return 0
	fi
	command -v go >/dev/null || { [ -x /usr/local/go/bin/go ] && PATH=$PATH:/usr/local/go/bin; }
	command -v go >/dev/null || die "no Go toolchain: cannot build dockerd $ver"
	mkdir -p "$cache/dockerd"
	# One build at a time per machine; a second caller waits and finds the binary.
	exec 9>"$cache/dockerd/.build.lock"
	flock 9
	if [ -x "$bin" ]; then
		return 0
	fi
	local start src work
	start=$(date +%s)
	say "building dockerd $ver from its Go module source github.com/docker/docker@$modver (once per machine, ~5 min; log: $cache/dockerd/build.log)"
	# Outside any module. The module source has no go.mod (moby is not a Go
	# module before v29); vendor.mod holds its requirements. -modfile needs a
	# go.mod to mark the module root, so the copy gets a stub one (upstream's
	# hack/with-go-mod.sh does the same).
	src=$(cd / && GOWORK=off GOFLAGS=-mod=mod go mod download -json "github.com/docker/docker@$modver" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	[ -n "$src" ] && [ -d "$src" ] || die "could not download the module source of github.com/docker/docker@$modver"
	work=$(mktemp -d "$cache/dockerd/src.XXXXXX")
	cp -r "$src/." "$work/"
	chmod -R u+w "$work"
	# The zip's vendor/ holds only modules.txt: build from the module cache (-mod=mod).
	rm -rf "$work/vendor"
	[ -e "$work/go.mod" ] || printf 'module github.com/docker/docker\n' >"$work/go.mod"
	if ! (cd "$work" && GOWORK=off GOFLAGS=-buildvcs=false \
		go build -mod=mod -modfile=vendor.mod -trimpath -tags 'netgo osusergo' \
		-ldflags "-X github.com/docker/docker/dockerversion.Version=$ver" \
		-o "$bin.tmp" ./cmd/dockerd) >"$cache/dockerd/build.log" 2>&1; then
		tail -n 20 "$cache/dockerd/build.log" >&2
		rm -rf "$work" "$bin.tmp"
		die "dockerd $ver build failed (log: $cache/dockerd/build.log)"
	fi
	rm -rf "$work"
	mv "$bin.tmp" "$bin"
	say "built $bin in $(($(date +%s) - start)) s"
}

# close_fds closes every descriptor above 2 of the calling (sub)shell, so that
# dockerd does not inherit (and hold) a flock taken by whoever started us.
close_fds() {
	local fd
	for fd in $(ls /proc/$BASHPID/fd); do
		[ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null
	done
	return 0
}

running_pid() {
	local pid
	pid=$(cat "$pidfile" 2>/dev/null || true)
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

wait_answer() { # wait_answer SECONDS
	local i
	for ((i = 0; i < $1 * 5; i++)); do
		answers && return 0
		sleep 0.2
	done
	return 1
}

start() {
	build
	if answers; then
		return 0
	fi
	if [ -n "$(running_pid)" ]; then
		say "dockerd $ver (pid $(running_pid)) runs but does not answer yet; waiting"
		wait_answer 30 && return 0
		die "dockerd $ver did not answer within 30 s; see $log"
	fi
	# Debian's containerd, runc and docker-init (docker.io) are what it runs.
	command -v containerd >/dev/null && command -v runc >/dev/null ||
		die "containerd and runc missing: run hack/docker.sh engine first"
	mkdir -p "$root/data" "$execroot" "$(dirname "$log")"
	say "starting dockerd $ver on $sock (data root $root/data, log $log)"
	echo "=== $(date -Is) holdfast/dockerd28.sh starts dockerd $ver" >>"$log"
	# Detached like hack/docker.sh's dockerd, with no descriptor but 0-2; no
	# iptables, no bridge: test containers use --network none.
	(cd / && close_fds && exec setsid "$bin" --data-root "$root/data" --exec-root "$execroot" \
		-H "unix://$sock" --pidfile "$pidfile" --iptables=false --ip6tables=false --bridge=none) \
		</dev/null >>"$log" 2>&1 &
	if ! wait_answer 60; then
		echo "holdfast/dockerd28: ERROR: dockerd $ver did not answer within 60 s; last lines of $log:" >&2
		tail -n 30 "$log" >&2 || true
		exit 1
	fi
	say "dockerd answers ($(docker version --format '{{.Server.Version}}, API {{.Server.APIVersion}}'))"
}

# reset empties the data root of a stopped dockerd 28: a test engine, so
# that volumes or plugins an interrupted run left cannot fail the next run.
reset() {
	[ -z "$(running_pid)" ] || die "dockerd $ver runs (pid $(running_pid)): stop it first"
	local m
	for m in $(awk -v a="$root/" -v b="$execroot/" 'index($5, a) == 1 || index($5, b) == 1 {print $5}' /proc/self/mountinfo | sort -r); do
		umount -l "$m" 2>/dev/null || true
	done
	if [ -e "$root/data" ]; then
		say "emptying dockerd $ver's data root $root/data: a test run starts from an empty engine"
		rm -rf "$root/data"
	fi
}

stop() {
	local pid i
	pid=$(running_pid || true)
	if [ -z "$pid" ]; then
		say "dockerd $ver is not running"
		return 0
	fi
	say "stopping dockerd $ver (pid $pid)"
	kill -TERM "$pid"
	for ((i = 0; i < 300; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.2
	done
	die "dockerd $ver (pid $pid) did not exit within 60 s; see $log"
}

status() {
	if answers; then
		echo "dockerd28: $(docker version --format 'server {{.Server.Version}} (API {{.Server.APIVersion}})') on $sock"
	elif [ -x "$bin" ]; then
		echo "dockerd28: built ($bin), not running"
	else
		echo "dockerd28: not built"
	fi
}

case "${1:-start}" in
build) build ;;
start) start ;;
reset) reset ;;
stop) stop ;;
status) status ;;
env) echo "DOCKER_HOST=unix://$sock" ;;
binary) echo "$bin" ;;
*) die "unknown command $1 (want build, start, stop, reset, status, env or binary)" ;;
esac
