# Warren's everyday targets. `make demo` runs the dev cluster; `make test`
# is what CI runs.
GO ?= go
PKGS := ./...

.PHONY: build test race lint bench demo clean proto

build:
	$(GO) build -o bin/warren ./cmd/warren

test:
	$(GO) test -race -count=1 -timeout 12m $(PKGS)
	# In-process multi-proxy clusters cannot run under -race (see
	# actors/clustertest): run them once more without it.
	$(GO) test -count=1 -timeout 10m -run 'Peering|Mesh|Cluster|Dynamic' ./actors/clustertest/

race: test

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "run gofmt -w"; exit 1)
	$(GO) vet $(PKGS)

bench:
	$(GO) test -run '^$$' -bench . -benchtime=1x $(PKGS)

demo: build
	./bin/warren dev --dir ./warren-dev

clean:
	rm -rf bin warren-dev

# Regenerate protobuf code (needs protoc and protoc-gen-go v1.36.12).
proto:
	protoc --go_out=. --go_opt=module=github.com/warren-proxy/warren cluster/clusterpb/cluster.proto
