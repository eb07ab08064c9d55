# holdfast: `make run` starts the plugin, `make test` runs every test.
# Both install what they need (Debian packages, the guest kernel, the test
# image) and say so; run them as root on Debian or Ubuntu.

SHELL   := /bin/bash
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN     := bin/holdfast

# Debian packages holdfast and its host tests use: mkfs for crypt volumes,
# cryptsetup where the kernel has dm-crypt, losetup for the tests, btrfs-progs
# for the point-in-time tests on a btrfs --root.
HOST_PKGS := e2fsprogs xfsprogs btrfs-progs cryptsetup-bin util-linux kmod

# Packages whose tests need dm-crypt, the kernel NFS client disk quotas or
# Debian's own kernel (loopdev's interrupted allocation): they run as root in a qemu
# guest booting Debian's kernel (vmtest/).
VMTEST_PKGS  ?= ./vmtest/selftest ./internal/loopdev ./driver/crypt ./driver/nfs ./fault/powerloss ./internal/quota ./vmtest/quota
VMTEST_FLAGS ?= -v

# Name of the managed plugin `make plugin` creates.
PLUGIN ?= holdfast

.PHONY: build run test unit vmtest vmtest-docker e2e plugin plugin-enable bench soak lint deps clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/holdfast

run: deps build
	@[ "$$(id -u)" = 0 ] || { echo "make run: holdfast mounts volumes and must run as root" >&2; exit 1; }
	./$(BIN) $(ARGS)

deps:
	@hack/deps.sh $(HOST_PKGS)

# unit tests and the privileged integration tests on the host (as root),
# with the race detector, one package at a time: they share the kernel's loop
# devices and mount table, and a scan by one disturbs the timing of another.
unit: deps
	@hack/deps.sh gcc libc6-dev strace tar libarchive-tools curl fio
	$(GO) test -race -count=1 -p 1 ./...

# in the guest: LUKS2 through real dm-crypt, NFS through the kernel client.
vmtest:
	VMTEST_PKGS="$(VMTEST_PKGS)" vmtest/build.sh $(VMTEST_FLAGS)

# in the guest: dockerd with holdfast as its plugin, NFS volumes from the
# guest's kernel NFS server, through the docker CLI (~3.5 min under TCG).
# Compose v2 is built first (cached), so the compose scenario runs there too.
vmtest-docker:
	@hack/docker.sh compose
	VMTEST_PKGS=./vmtest/docker vmtest/build.sh $(VMTEST_FLAGS)

# Real dockerds: every scenario against the managed plugin and the legacy
# daemon, compose and a Swarm stack, on Debian's dockerd 20.10 (installed and
# started when absent) and on dockerd 28 (built once from source, cached; the
# engines take turns). run.sh first re-runs itself under
# `flock -o /tmp/holdfast-e2e.lock`, the lock every script that starts or
# stops the host's dockerd takes (saying who holds it when it has to wait);
# E2E_ENGINES="20.10" runs one engine.
E2E_ENGINES ?= 20.10 28
e2e:
	HOLDFAST_E2E_ENGINES="$(E2E_ENGINES)" e2e/run.sh

test: lint unit vmtest vmtest-docker e2e

# The managed (v2) plugin: plugin/rootfs plus the top-level config.json.
plugin: build
	plugin/build.sh $(PLUGIN)

plugin-enable: build
	plugin/build.sh --enable $(PLUGIN)

# Benchmarks, never timed assertions: B1-B5, B4's fio pairs, pgbench in a
# container (DB) and the ceilings on the host (holdfast against the same
# work without it, side by side in one run; a table on stdout, the same as
# JSON in bin/bench.json, the chart in bin/bench.svg), then the guest's part
# where LUKS2 runs: pgbench on a LUKS volume (internal/bench's
# TestGuestPGBench, its rows merged into bin/bench.json and the chart) and
# the crypt benchmarks. The suites that use dockerd (B2, DB) take
# /tmp/holdfast-e2e.lock while they run, as e2e does, the guest
# /tmp/holdfast-vm.lock; PostgreSQL comes from Debian's packages, as an
# image built once (hack/pgimage.sh) and in the guest (vmtest/pg.sh).
bench: deps build
	@hack/deps.sh fio postgresql busybox-static
	@flock /tmp/holdfast-e2e.lock sh -c 'hack/docker.sh engine && hack/pgimage.sh'
	$(GO) run ./cmd/holdfast-bench -bin $(BIN) -out bin/bench.json
	@echo "bench: restarting dockerd, which keeps B2's legacy driver until it restarts (docker volume ls would wait 15 s for it)"
	@flock /tmp/holdfast-e2e.lock hack/docker.sh restart
	@echo "bench: the guest's part (LUKS: pgbench in internal/bench's TestGuestPGBench, driver/crypt's benchmarks), merged into bin/bench.json"
	{ flock /tmp/holdfast-vm.lock env VMTEST_PKGS='./driver/crypt ./internal/bench' VMTEST_PG=1 VMTEST_MEM=2048 \
		VMTEST_GUEST_ENV=HOLDFAST_BENCH_GUEST=1 vmtest/build.sh -timeout 45m -run '^TestGuestPGBench$$' -bench . -benchtime 3x; \
		echo $$? >bin/bench-guest.rc; } | tee bin/bench-guest.log
	@exit $$(cat bin/bench-guest.rc)
	$(GO) run ./cmd/holdfast-bench -merge bin/bench-guest.log -out bin/bench.json -chart bin/bench.svg

# The long fault suites: 2000 crash rounds (fault/), the power-loss replay
# in the guest over ext4 and xfs and several workloads (thousands of crash
# states, fault/powerloss), and each fuzz target for FUZZTIME.
FUZZTIME ?= 1m
soak: deps
	HOLDFAST_SOAK=1 $(GO) test -count=1 -timeout 4h -v -run . ./fault
	VMTEST_PKGS=./fault/powerloss VMTEST_GUEST_ENV=HOLDFAST_SOAK=1 VMTEST_TIMEOUT=10800 \
		vmtest/build.sh -v -timeout 3h -run '^TestPowerLoss$$'
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeRequest$$' -fuzztime $(FUZZTIME) ./server
	$(GO) test -run '^$$' -fuzz '^FuzzParseOptions$$' -fuzztime $(FUZZTIME) ./driver

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	 if [ -n "$$out" ]; then echo "gofmt would change: $$out" >&2; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin plugin/rootfs
