# Meridian — see README.md. `make dev` runs the system, `make test` runs every test.
GO        ?= go
BIN       := bin/meridian
PROTOS    := $(shell find api -name '*.proto')
export CGO_ENABLED ?= 0

.PHONY: all build test test-short lint generate bench dev clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/meridian

## dev: run the whole system on this machine: three regions and the edge.
## Flags go in ARGS, e.g. make dev ARGS="--port_base 20000 --state_dir /tmp/m --fresh".
dev: build
	./$(BIN) dev $(ARGS)

## test: unit, integration and end-to-end tests with the race detector.
## PostgreSQL tests use $$MERIDIAN_TEST_POSTGRES, or start a throwaway
## server themselves when Debian's PostgreSQL is installed. Tests against
## real Kubernetes control planes (test/kubetest) use the binaries that
## kube-tools builds once per machine.
test:
	@scripts/ensure-tools.sh
	@# Unit and integration tests in parallel; then the multi-process
	@# system tests one package at a time, since they measure latency and
	@# throughput on a 2-core machine and must not share it with each other.
	@# (Plain assignments first: `export X="$$(cmd)"` hides cmd's failure.)
	pg="$$(scripts/ensure-postgres.sh)" && kube="$$(scripts/ensure-kube.sh)" && \
	  export MERIDIAN_TEST_POSTGRES="$$pg" MERIDIAN_KUBE_BIN="$$kube" CGO_ENABLED=1 && \
	  $(GO) test -race -count=1 -timeout 20m $$($(GO) list ./... | grep -v '/test/') && \
	  $(GO) test -race -count=1 -timeout 20m -p 1 ./test/...

## kube-tools: etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
## kubectl and kwok for test/kubetest, built into ~/.cache/meridian/kube-v1.37.2
## (about 15 minutes the first time on 2 cores; nothing to do after that).
.PHONY: kube-tools
kube-tools:
	@scripts/ensure-kube.sh

test-short:
	$(GO) test -count=1 -short ./...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

## generate: regenerate Go from api/**/*.proto, and kube/api's deepcopy
## functions and CRDs (deploy/kubernetes/crds), with pinned tools (offline).
generate:
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc -I api -I /usr/include \
	  --plugin=protoc-gen-go="$$($(GO) tool -n protoc-gen-go)" \
	  --plugin=protoc-gen-go-grpc="$$($(GO) tool -n protoc-gen-go-grpc)" \
	  --go_out=api --go_opt=paths=source_relative \
	  --go-grpc_out=api --go-grpc_opt=paths=source_relative \
	  $(PROTOS)
	$(GO) generate ./kube/api/


bench:
	MERIDIAN_TEST_POSTGRES="$$(scripts/ensure-postgres.sh)" MERIDIAN_BENCH_PROFILE="$(BENCH_PROFILE)" \
	  $(GO) test -run '^$$' -bench . -benchtime 5000x -count 3 -timeout 30m ./test/bench/

clean:
	rm -rf bin

## bench-gateway: gateway vs nginx and HAProxy, TLS in front and h2c behind, cores
## pinned (test/proxybench, about 8 minutes); e.g. BENCH_FLAGS="-rounds 1".
.PHONY: bench-gateway
bench-gateway:
	test/proxybench/run.sh $(BENCH_FLAGS)

## bench-edge: edge vs HAProxy (TLS h2 both sides, cores pinned: CPU per call, p50/p99,
## throughput) and failover times over 10 kills of a region under `meridian dev`
## (test/edgebench, about 7 minutes); e.g. BENCH_FLAGS="-parts overhead -rounds 1".
.PHONY: bench-edge
bench-edge: build
	test/edgebench/run.sh $(BENCH_FLAGS)

## bench-notebooks: notebook traffic on loopback (WebSocket round trip p50/p99, a
## 100 MB download): direct, edge + gateway, configurable-http-proxy (npm install
## into a temporary directory; skipped with a message without npm). About a minute.
.PHONY: bench-notebooks
bench-notebooks:
	MERIDIAN_NOTEBOOK_BENCH=1 $(GO) test -count=1 -v -timeout 10m -run TestNotebookTraffic ./test/notebookbench/
