#!/usr/bin/env bash
# docker.sh [up|engine|image|compose|restart|stop|status]
#
# Makes a Docker engine usable for holdfast's end-to-end tests on a bare
# Debian machine (root, no systemd, no image registry). Every step is
# idempotent: run it as often as you like.
#
#   up       (default) engine + test image + compose tool
#   engine   install docker.io and start dockerd if `docker version` does not answer
#   image    build the busybox test image (holdfast-test:latest) if absent
#   compose  make `docker compose` (v2, built once per machine from its Go module
#            source and cached) available; falls back to Debian's docker-compose 1.29.2
#   restart  restart dockerd (systemctl when systemd runs docker, else our own dockerd)
#   stop     stop the dockerd this script started
#   status   print engine, image and compose state
#
# Environment:
#   HOLDFAST_ENGINE          "20.10" (default): Debian's dockerd, on the default socket;
#                            "28": dockerd 28 from hack/dockerd28.sh (built once, own data
#                            root and socket; DOCKER_HOST is set to it). engine, restart and
#                            stop then act on that dockerd and never on the host's.
#   HOLDFAST_CACHE           cache folder (default /var/cache/holdfast)
#   HOLDFAST_DOCKERD_LOG     dockerd log file (default /var/log/holdfast-dockerd.log)
#   HOLDFAST_TEST_IMAGE      test image name (default holdfast-test:latest)
#   HOLDFAST_COMPOSE_VERSION compose v2 version to build (default v2.40.3)
#   HOLDFAST_COMPOSE         "v2" (default: build v2 unless `docker compose` works; if that fails,
#                            Debian's 1.29.2), "v1" (never build v2; Debian's when no compose works)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${HOLDFAST_CACHE:-/var/cache/holdfast}
log=${HOLDFAST_DOCKERD_LOG:-/var/log/holdfast-dockerd.log}
image=${HOLDFAST_TEST_IMAGE:-holdfast-test:latest}
compose_version=${HOLDFAST_COMPOSE_VERSION:-v2.40.3}
compose_pref=${HOLDFAST_COMPOSE:-v2}
cli_plugins=/usr/local/lib/docker/cli-plugins
pidfile=/var/run/docker.pid

say() { echo "holdfast/docker: $*"; }
die() { echo "holdfast/docker: ERROR: $*" >&2; exit 1; }

engine_sel=${HOLDFAST_ENGINE:-20.10}
case "$engine_sel" in
20.10) ;;
28) eval "export $("$here/dockerd28.sh" env)" ;;
*) die "HOLDFAST_ENGINE=$engine_sel: want 20.10 or 28" ;;
esac

answers() { timeout 10 docker version >/dev/null 2>&1; }

systemd_docker() {
	[ -d /run/systemd/system ] && command -v systemctl >/dev/null && systemctl cat docker.service >/dev/null 2>&1
}

wait_answer() { # wait_answer SECONDS
	local i
	for ((i = 0; i < $1 * 5; i++)); do
		answers && return 0
		sleep 0.2
	done
	return 1
}

# close_fds closes every descriptor above 2 of the calling (sub)shell. A
# dockerd started from a command run under `flock LOCK cmd` would otherwise
# inherit the lock's descriptor and hold the lock for as long as it runs.
close_fds() {
	local fd
	for fd in $(ls /proc/$BASHPID/fd); do
		[ "$fd" -gt 2 ] && eval "exec $fd>&-" 2>/dev/null
	done
	return 0
}

fail_start() {
	echo "holdfast/docker: ERROR: dockerd did not answer within $1 s; last lines of $log:" >&2
	tail -n 30 "$log" >&2 2>/dev/null || true
	exit 1
}

start_dockerd() {
	if systemd_docker; then
		say "starting docker.service"
		systemctl start docker.service
		wait_answer 60 || { systemctl status docker.service --no-pager >&2 || true; die "docker.service did not answer"; }
		return
	fi
	mkdir -p "$(dirname "$log")"
	say "starting dockerd (log: $log)"
	echo "=== $(date -Is) holdfast/docker.sh starts dockerd" >>"$log"
	# Detached from our pipes and session so it outlives this script and the
	# test run that started it. No iptables and no bridge: test containers use
	# --network none and the machine has no route to a registry anyway.
	# No descriptor but 0-2 either: see close_fds.
	(cd / && close_fds && exec setsid dockerd --iptables=false --bridge=none) </dev/null >>"$log" 2>&1 &
	wait_answer 60 || fail_start 60
	say "dockerd answers ($(docker version --format '{{.Server.Version}}, API {{.Server.APIVersion}}'))"
}

engine() {
	"$here/deps.sh" docker.io busybox-static
	if [ "$engine_sel" = 28 ]; then
		"$here/dockerd28.sh" start
		return
	fi
	if answers; then
		return 0
	fi
	# A dockerd that is up but not answering yet (just started by someone else).
	if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
		say "dockerd (pid $(cat "$pidfile")) runs but does not answer yet; waiting"
		wait_answer 30 && return 0
		fail_start 30
	fi
	start_dockerd
}

stop_dockerd() {
	if [ "$engine_sel" = 28 ]; then
		"$here/dockerd28.sh" stop
		return
	fi
	if systemd_docker; then
		systemctl stop docker.service
		return
	fi
	local pid
	pid=$(cat "$pidfile" 2>/dev/null || true)
	if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
		say "dockerd is not running"
		return 0
	fi
	say "stopping dockerd (pid $pid)"
	kill -TERM "$pid"
	local i
	for ((i = 0; i < 300; i++)); do # dockerd stops containers first: up to ~15 s each
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.2
	done
	die "dockerd (pid $pid) did not exit within 60 s; see $log"
}

restart() {
	if [ "$engine_sel" = 28 ]; then
		"$here/dockerd28.sh" stop
		"$here/dockerd28.sh" start
		return
	fi
	if systemd_docker; then
		say "restarting docker.service"
		systemctl restart docker.service
		wait_answer 60 || die "docker.service did not answer after restart"
		return
	fi
	stop_dockerd
	start_dockerd
}

# Bump when the image's content changes: an older image is rebuilt.
image_version=2

image() {
	if [ "$(docker image inspect --format '{{index .Config.Labels "holdfast.image-version"}}' "$image" 2>/dev/null)" = "$image_version" ]; then
		return 0
	fi
	"$here/deps.sh" busybox-static
	local dir old
	old=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
	dir=$(mktemp -d)
	trap 'rm -rf "$dir"' RETURN
	# No /data or other mount targets: dockerd copies an image folder's owner
	# and mode onto an empty volume mounted over it.
	mkdir -p "$dir"/{bin,tmp,etc,proc,sys,dev}
	chmod 1777 "$dir/tmp"
	cp /bin/busybox "$dir/bin/busybox"
	# Every applet as a link (sh cat ls echo mkdir mount df sleep grep dd tar rm
	# cp sync head wc seq touch stat md5sum find sort xargs ...).
	local a
	for a in $("$dir/bin/busybox" --list); do
		[ "$a" = busybox ] || ln -sf busybox "$dir/bin/$a"
	done
	echo 'root:x:0:0:root:/:/bin/sh' >"$dir/etc/passwd"
	echo 'nobody:x:65534:65534:nobody:/:/bin/false' >>"$dir/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$dir/etc/group"
	say "building test image $image from busybox-static"
	tar -C "$dir" -c . | docker import \
		--change 'ENV PATH=/bin' --change 'CMD ["sh"]' --change "LABEL holdfast.image-version=$image_version" \
		--message "holdfast e2e test image (busybox-static)" - "$image" >/dev/null
	[ -z "$old" ] || docker image rm "$old" >/dev/null 2>&1 || true
}

# compose_cmd prints the command that runs compose ("docker compose" or
# "docker-compose"), or nothing.
compose_cmd() {
	if docker compose version >/dev/null 2>&1; then
		echo "docker compose"
	elif command -v docker-compose >/dev/null && docker-compose version >/dev/null 2>&1; then
		echo "docker-compose"
	fi
}

build_compose_v2() {
	local bin="$cache/compose/docker-compose-$compose_version"
	if [ ! -x "$bin" ]; then
		command -v go >/dev/null || { [ -x /usr/local/go/bin/go ] && PATH=$PATH:/usr/local/go/bin; }
		command -v go >/dev/null || { say "no Go toolchain: cannot build compose v2"; return 1; }
		mkdir -p "$cache/compose"
		say "building docker compose $compose_version from its Go module source (once per machine, ~150 s)"
		local src work
		# Outside any module: compose's go.mod has exclude directives, so `go
		# install` refuses it; its module source builds as a main module.
		src=$(cd / && GOWORK=off GOFLAGS=-mod=mod go mod download -json "github.com/docker/compose/v2@$compose_version" |
			sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
		[ -n "$src" ] && [ -d "$src" ] || { say "could not download compose module source"; return 1; }
		work=$(mktemp -d "$cache/compose/src.XXXXXX")
		cp -r "$src/." "$work/"
		chmod -R u+w "$work"
		if ! (cd "$work" && GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0 \
			go build -trimpath -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$compose_version" \
			-o "$bin.tmp" ./cmd) >"$cache/compose/build.log" 2>&1; then
			tail -n 20 "$cache/compose/build.log" >&2
			rm -rf "$work" "$bin.tmp"
			say "compose v2 build failed (log: $cache/compose/build.log)"
			return 1
		fi
		rm -rf "$work"
		mv "$bin.tmp" "$bin"
	fi
	mkdir -p "$cli_plugins"
	install -m 0755 "$bin" "$cli_plugins/docker-compose"
	docker compose version >/dev/null 2>&1
}

compose() {
	if [ "$compose_pref" = v2 ]; then
		docker compose version >/dev/null 2>&1 && return 0
		if build_compose_v2; then
			say "compose: $(docker compose version)"
			return 0
		fi
		say "falling back to Debian's docker-compose"
	else
		[ -n "$(compose_cmd)" ] && return 0
	fi
	"$here/deps.sh" docker-compose
	[ -n "$(compose_cmd)" ] || die "no working compose tool"
	say "compose: $(docker-compose version --short 2>/dev/null || true) (Debian docker-compose)"
}

status() {
	if answers; then
		echo "engine:  $(docker version --format 'server {{.Server.Version}} (API {{.Server.APIVersion}}), client {{.Client.Version}}')"
	else
		echo "engine:  not answering"
		return 0
	fi
	if docker image inspect "$image" >/dev/null 2>&1; then echo "image:   $image"; else echo "image:   $image missing"; fi
	local c
	c=$(compose_cmd)
	echo "compose: ${c:-missing}${c:+ ($($c version --short 2>/dev/null || true))}"
}

cmd=${1:-up}
case "$cmd" in
up)
	engine
	image
	compose
	;;
engine) engine ;;
image) engine && image ;;
compose) engine && compose ;;
compose-cmd) compose_cmd ;;
restart) restart ;;
stop) stop_dockerd ;;
status) status ;;
*) die "unknown command $cmd (want up, engine, image, compose, restart, stop or status)" ;;
esac
