# Warren's everyday targets. `make demo` runs the dev cluster; `make test`
# is what CI runs.
GO ?= go
PKGS := ./...

.PHONY: build test test-deploy race lint bench demo clean proto sshd client-servers bench-path bench-interactive bench-setup-rate bench-scale bench-failover bench-clients bench-wan bench-gossip bench-regions bench-wan-load bench-region-loss bench-survival bench-all

build:
	$(GO) build -o bin/warren ./cmd/warren

# A binary built with -race sleeps a second when it exits (ThreadSanitizer's
# atexit_sleep_ms) so that late race reports reach stderr; the tests start
# warren processes by the hundred (every --help, every client command), so
# they run without that second. Races found are reported all the same.
test: test-deploy
	GORACE="$${GORACE:+$$GORACE }atexit_sleep_ms=0" $(GO) test -race -count=1 -timeout 12m -parallel 4 $(PKGS)

race: test

# The deployment blueprints (deploy/helm, deploy/compose, deploy/systemd),
# checked offline with Helm's, compose-go's and systemd-analyze's own code
# and Warren's config loaders. A Go module of its own, deploy/check, keeps
# Helm's and Kubernetes' dependencies out of go.mod; ./... above does not
# reach it. No -race: the checks run one goroutine, and a race build of
# Kubernetes' packages would only lengthen a cold build.
DEPLOY_CHECK := cd deploy/check &&

test-deploy:
	$(DEPLOY_CHECK) $(GO) test -count=1 -timeout 5m ./...

# What CI checks before the tests (.ci/run): gofmt, go vet, staticcheck at a
# pinned version (built once into the Go build cache by `go run`), and a
# go.mod/go.sum that `go mod tidy` would leave as they are. The house rules
# (dependency table, package comments) are tests: internal/lint.
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
# deploy/check (its own module) is vetted and tidy-checked, not
# staticchecked: staticcheck's first run over Helm's and Kubernetes'
# packages would cost a fresh CI minutes for one test file.

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "run gofmt -w"; exit 1)
	$(GO) vet $(PKGS)
	$(STATICCHECK) $(PKGS)
	@$(GO) mod tidy -diff || (echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1)
	$(DEPLOY_CHECK) $(GO) vet ./...
	@$(DEPLOY_CHECK) $(GO) mod tidy -diff || (echo "deploy/check/go.mod/go.sum are not tidy: run go mod tidy in deploy/check"; exit 1)

bench:
	$(GO) test -run '^$$' -bench . -benchtime=1x $(PKGS)

# Scenario benchmarks (package bench): each prints markdown tables and
# writes CSV and PNG files to $(BENCH_OUT). See bench/RESULTS.md.
BENCH_OUT ?= bench/out

sshd:
	@bench/install-openssh-server

client-servers:
	@bench/install-client-servers

bench-path: build sshd
	./bin/warren bench path --out $(BENCH_OUT)

bench-interactive: build sshd
	./bin/warren bench interactive-under-load --out $(BENCH_OUT)

bench-setup-rate: build sshd
	./bin/warren bench setup-rate --out $(BENCH_OUT)

bench-scale: build
	./bin/warren bench scale --out $(BENCH_OUT)

bench-failover: build
	./bin/warren bench failover --out $(BENCH_OUT)

bench-clients: build sshd client-servers
	./bin/warren bench clients --out $(BENCH_OUT)

bench-wan: build
	./bin/warren bench wan --out $(BENCH_OUT)

bench-gossip: build
	./bin/warren bench gossip --out $(BENCH_OUT)

bench-regions: build sshd
	./bin/warren bench regions --out $(BENCH_OUT)

bench-wan-load: build sshd
	./bin/warren bench wan-load --out $(BENCH_OUT)

bench-region-loss: build
	./bin/warren bench region-loss --out $(BENCH_OUT)

bench-survival: build sshd
	./bin/warren bench survival --out $(BENCH_OUT)

bench-all: build sshd client-servers
	./bin/warren bench all --out $(BENCH_OUT)

demo: build
	./bin/warren dev --dir ./warren-dev

clean:
	rm -rf bin warren-dev

# Regenerate protobuf code (needs protoc and protoc-gen-go v1.36.12).
proto:
	protoc --go_out=. --go_opt=module=github.com/warren-proxy/warren cluster/clusterpb/cluster.proto
