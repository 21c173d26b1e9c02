# netconf-migrator: build, test and lint targets (kubebuilder-style).
SHELL := /usr/bin/env bash -o pipefail
GO ?= go
BIN ?= bin
# How long each fuzz target runs inside `make test`.
FUZZTIME ?= 10s
PKGS := ./...

.PHONY: all build test test-assets unit fuzz bench-smoke lint bench generate manifests clean

all: build

build: ## Build the netconf-migrator binary into bin/.
	$(GO) build -o $(BIN)/netconf-migrator ./cmd/netconf-migrator

test: lint unit fuzz bench-smoke ## Everything CI runs.

# The suites against a real etcd and kube-apiserver find them through
# KUBEBUILDER_ASSETS; the script installs or builds them once per version.
test-assets: ## Install etcd and kubectl, build kube-apiserver (cached).
	@hack/setup-test-assets.sh >/dev/null

# With the race detector: the migration's workers, the webhook and the
# Harvester stand-ins all run concurrently.
unit: test-assets
	KUBEBUILDER_ASSETS="$$(hack/setup-test-assets.sh)" $(GO) test -race -count=1 $(PKGS)

# Every benchmark once, the migration ones on a tenth of their NADs (-short):
# the figures come from hack/bench-*.sh; this keeps the code behind them working.
bench-smoke: test-assets
	KUBEBUILDER_ASSETS="$$(hack/setup-test-assets.sh)" $(GO) test -short -count=1 -run '^$$' -bench . -benchtime 1x $(PKGS)

fuzz: ## Run each fuzz target for FUZZTIME.
	$(GO) test ./apis/netconf -run '^$$' -fuzz '^FuzzNormalize$$' -fuzztime $(FUZZTIME)
	$(GO) test ./webhooks -run '^$$' -fuzz '^FuzzAdmissionReview$$' -fuzztime $(FUZZTIME)

lint: ## gofmt and go vet.
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

bench: ## Go benchmarks of the normalizer.
	$(GO) test ./apis/netconf -run '^$$' -bench . -benchmem -count 5

# The install bundles, rendered from config/ with kubectl's kustomize (the
# kubectl the test assets script checks for).
manifests: test-assets ## Render dist/install.yaml, dist/install-cert-manager.yaml, dist/migrate-job.yaml.
	@mkdir -p dist
	kubectl kustomize config/default > dist/install.yaml
	kubectl kustomize config/cert-manager > dist/install-cert-manager.yaml
	kubectl kustomize config/job > dist/migrate-job.yaml

clean:
	rm -rf $(BIN) dist

generate: ## Regenerate deep-copy functions.
	$(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0 object:headerFile=hack/boilerplate.go.txt paths=./apis/...
