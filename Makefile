# inkan — the two commands a newcomer needs are `make run` and `make test`.
GO      ?= go
BIN     := bin/inkan
DEV_DIR := .inkan-dev

.PHONY: all deps build run test check unit fuzz-smoke scripts bench bench-peer clean

all: build

deps:
	@deploy/install-deps.sh

# Silent, as go build is when it works: a second `make run` says only why it
# refuses to start.
build: deps
	@$(GO) build -buildvcs=auto -o $(BIN) ./cmd/inkan

# The dev appliance: one node, state in ./.inkan-dev, SoftHSM token and config made
# for you on the first run; it runs in the foreground until Ctrl-C, and resumes after.
run: build
	@deploy/dev-run.sh $(BIN) $(DEV_DIR)

# Everything CI runs: formatting, vet, staticcheck, repository hygiene, the tests
# (race detector on), the fuzz smoke, and the README and `make run` as printed.
test: deps check unit fuzz-smoke scripts

check:
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	 if [ -n "$$bad" ]; then echo "gofmt needed on:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	@deploy/check-repo.sh

unit:
	$(GO) test -race -timeout 20m ./...

# Every fuzz target runs briefly on its seed corpus plus a few seconds of mutation.
fuzz-smoke:
	@deploy/fuzz-smoke.sh

# The README's blocks run as printed (a 3-node cluster on ports 7510-7543, with
# 20 kill/restart rounds), and the dev appliance's printed commands (7400-7490);
# the failover benchmark's script once (one round), so that the script behind
# docs/BENCHMARKS.md's failover figures keeps running (its figure is not judged).
scripts:
	@deploy/test/devrun.sh
	@deploy/test/readme.sh
	@deploy/bench/failover.sh 1

# Every benchmark, then inkan's enrollment against step-ca's (deploy/bench/peer.sh,
# which builds step-ca once into ~/.cache/inkan-bench). bench-peer: that one only.
bench: build
	@deploy/install-deps.sh --bench
	@deploy/bench/run-all.sh
	@deploy/bench/peer.sh $(BIN)

bench-peer: build
	@deploy/bench/peer.sh $(BIN)

clean:
	rm -rf bin
