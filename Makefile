# Opus build, test and install. Run as root on Debian 12 for the end-to-end
# tests and the demo; everything else works as any user.

GO        ?= go
PREFIX    ?= /usr/local
DESTDIR   ?=
BIN       := bin
BUF       := $(GO) run github.com/bufbuild/buf/cmd/buf@v1.75.0
CMDS      := opusd opus-privd opusctl
GOTESTFLAGS ?=
# The next release; `make deb` versions a checkout's package as a snapshot before it.
VERSION   ?= 0.1.0

.PHONY: all build test unit e2e proto proto-check lint vet fmt-check ci deps demo demo-stop bench screenshots axe stress install uninstall deb clean

all: build

## build: compile the three binaries into bin/
build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

## deps: install the Debian packages the tests and the demo need (root only; no-op when present)
deps:
	@scripts/deps.sh

## test: the whole suite — what the README promises and CI runs
test: deps lint build
	$(GO) test $(GOTESTFLAGS) -count=1 -parallel 4 -timeout 30m ./...

## unit: only the tests that need neither root nor Apache
unit:
	$(GO) test -short -count=1 ./...

## e2e: only the end-to-end tests (root, real Apache)
e2e: build
	$(GO) test -count=1 -parallel 4 -timeout 30m -v ./e2e/...

## lint: gofmt, go vet, buf lint, and generated code in sync with the protos
lint: fmt-check vet proto-check

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

## proto: regenerate Go from the protos with pinned generators (no system protoc)
proto:
	cd proto && $(BUF) lint && $(BUF) generate

## proto-check: fail when regenerating would change a committed file
proto-check: proto
	@git diff --exit-code -- proto/ || { echo "generated code is out of date: run 'make proto' and commit"; exit 1; }

## ci: what .ci/run calls
ci: test

## demo: deploy the sample project on the embedded defaults and print its URL
demo: deps build
	@scripts/demo.sh

## demo-stop: stop what the demo started and remove its project
demo-stop:
	@scripts/demo.sh stop

## bench: benchmarks on the real stack (root; the e2e harness's managed Apache on its own ports).
## Prints a table and writes bench.json + bench.txt; see docs/performance.md. BENCH selects, e.g. BENCH=Deploy
BENCH ?= .
bench: build
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime 1x -count=1 -timeout 30m ./e2e/ -args -bench.out=$(CURDIR)/bench.json
	@echo; cat bench.txt

## screenshots: the web console's pictures in docs/ (README shows them), at
## 1280 px (TestWebConsole) and 390 px (TestConsoleFitsAPhone); root, Chromium
screenshots: build
	OPUS_SCREENSHOTS=1 $(GO) test -count=1 -timeout 10m -run '^(TestWebConsole|TestConsoleFitsAPhone)$$' ./e2e/

## axe: fetch the pinned axe-core into e2e/testdata/axe/ (npm; checks its sha256)
axe:
	@scripts/axe.sh

## stress: only the crash matrix (opusd killed after each step, privd and Apache deaths)
## and the 50-client load test (root, real Apache); `make test` runs them too
stress: build
	$(GO) test -count=1 -timeout 20m -v -run '^(TestReleaseHasNoFaultHook|TestCrash.*|TestPrivdDiesMidCall|TestApacheDies|TestLoad)$$' ./e2e/

## install: binaries, units, default config, the opus user and groups (PREFIX, DESTDIR)
install: build
	@scripts/install.sh install

## uninstall: reverse install
uninstall:
	@scripts/install.sh uninstall

## deb: the Debian package dist/opus_VERSION_ARCH.deb (dpkg-deb; see scripts/deb/)
deb:
	@VERSION=$(VERSION) GO=$(GO) scripts/deb/build.sh

clean:
	rm -rf $(BIN) dist
