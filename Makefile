# inkan — the two commands a newcomer needs are `make run` and `make test`.
GO      ?= go
BIN     := bin/inkan
DEV_DIR := .inkan-dev

.PHONY: all deps build run test check unit fuzz-smoke bench clean

all: build

deps:
	@deploy/install-deps.sh

build: deps
	$(GO) build -buildvcs=auto -o $(BIN) ./cmd/inkan

# The dev appliance: one node, state in ./.inkan-dev, SoftHSM token and config made
# for you on the first run; it runs in the foreground until Ctrl-C, and resumes after.
run: build
	@deploy/dev-run.sh $(BIN) $(DEV_DIR)

# Everything CI runs: formatting, vet, staticcheck, the tests (race detector on).
test: deps check unit fuzz-smoke

check:
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	 if [ -n "$$bad" ]; then echo "gofmt needed on:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

unit:
	$(GO) test -race -timeout 20m ./...

# Every fuzz target runs briefly on its seed corpus plus a few seconds of mutation.
fuzz-smoke:
	@deploy/fuzz-smoke.sh

bench: build
	@deploy/install-deps.sh --bench
	@deploy/bench/run-all.sh

clean:
	rm -rf bin
