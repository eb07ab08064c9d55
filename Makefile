# holdfast: `make run` starts the plugin, `make test` runs every test.
# Both install what they need (Debian packages, the guest kernel, the test
# image) and say so; run them as root on Debian or Ubuntu.

SHELL   := /bin/bash
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN     := bin/holdfast

# Debian packages the tests use on the host.
HOST_PKGS := e2fsprogs xfsprogs util-linux kmod

.PHONY: build run test unit lint deps clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/holdfast

run: build
	@[ "$$(id -u)" = 0 ] || { echo "make run: holdfast mounts volumes and must run as root" >&2; exit 1; }
	./$(BIN) $(ARGS)

deps:
	@hack/deps.sh $(HOST_PKGS)

# unit tests and the privileged integration tests on the host (as root).
unit: deps
	$(GO) test -count=1 ./...

test: lint unit

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	 if [ -n "$$out" ]; then echo "gofmt would change: $$out" >&2; exit 1; fi
	$(GO) vet ./...

clean:
	rm -rf bin plugin/rootfs
