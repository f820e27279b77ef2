# zos — see README.md. `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
export PATH := $(PATH):/usr/local/go/bin:$(shell $(GO) env GOPATH 2>/dev/null)/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
TEST_TIMEOUT ?= 80m
PKGS ?= ./...

.PHONY: help build run test check bench fmt vet staticcheck deps-run deps-test clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

build: ## build bin/zos
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/zos ./cmd/zos

deps-run:
	scripts/deps.sh run

deps-test:
	scripts/deps.sh test

run: deps-run build ## install what is needed, build, start the embedded 3-node dev cluster
	bin/zos dev

test: deps-test build ## install the test tools and run every test (with the invariant checks compiled in)
	$(GO) vet $(PKGS)
	$(GO) test -tags invariants -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

check: ## gofmt, go mod tidy, go vet, staticcheck and go test -race
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) mod tidy -diff
	$(GO) vet $(PKGS)
	staticcheck $(PKGS)
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

bench: build ## run the end-to-end benchmarks against their anchors (see docs/benchmarks.md)
	bin/zos bench all --out bench-out $(BENCH_FLAGS)
	bin/zos bench publish bench-out docs/benchmarks.md docs/bench

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin
