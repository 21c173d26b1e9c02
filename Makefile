# netconf-migrator: build, test and lint targets (kubebuilder-style).
SHELL := /usr/bin/env bash -o pipefail
GO ?= go
BIN ?= bin
# How long each fuzz target runs inside `make test`.
FUZZTIME ?= 10s
PKGS := ./...
# The tooling (image builder, chart renderer, demo) is a module of its own
# in hack/, so that the product's go.mod lists no Helm or registry client;
# its commands run from the repository's root with absolute paths.
TOOLS := $(GO) -C hack
CHART := $(CURDIR)/config/chart/netconf-migrator

.PHONY: rehearsal controller-gen prepare chaos release-cli chart-package demo image fuzz-normalizer all build test test-assets unit fuzz bench-smoke lint bench generate verify-generate manifests clean soak

all: build

build: ## Build the netconf-migrator binary into bin/.
	$(GO) build -o $(BIN)/netconf-migrator ./cmd/netconf-migrator

# The image, built by Go code: static binaries for each platform, then an
# OCI image index (no Docker engine, no base image) in dist/image: an OCI
# layout, an OCI archive for `ctr images import` and Harvester's air-gap
# import, and a `docker load` archive per platform. The same commit gives
# the same digests: versions and times come from git.
IMAGE_REPOSITORY ?= ghcr.io/harvester/netconf-migrator
IMAGE_PLATFORMS ?= linux/amd64 linux/arm64
# One version (the file VERSION) names the chart, its appVersion, the
# kustomize image tags and the released image: a release tag must be
# v$(cat VERSION). Between releases the image is tagged
# v<VERSION>-dev.<commit>, which nothing installs by default.
RELEASE_VERSION := v$(shell cat VERSION)
VERSION ?= $(shell t=$$(git describe --tags --exact-match 2>/dev/null); if [ "$$t" = "$(RELEASE_VERSION)" ]; then echo $$t; else echo $(RELEASE_VERSION)-dev.$$(git rev-parse --short HEAD 2>/dev/null || echo unknown); fi)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
CREATED ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
# The CLI a release publishes: kubectl-netconf_migrator for every platform
# kubectl runs on (linux, darwin, windows on amd64 and arm64), each with the
# LICENSE in a .tar.gz (.zip on Windows), its CycloneDX SBOM, SHA256SUMS, and the krew manifest
# netconf-migrator.yaml, into dist/cli. The same commit gives the same bytes.
release-cli: ## Build the CLI archives, their checksums and the krew manifest into dist/cli.
	$(TOOLS) run ./releasecli -root $(CURDIR) -version $(VERSION) -created $(CREATED) -out $(CURDIR)/dist/cli

image: ## Build the multi-platform image into dist/image.
	@for p in $(IMAGE_PLATFORMS); do \
	  os=$${p%/*}; arch=$${p#*/}; \
	  CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch $(GO) build -trimpath -buildvcs=false \
	    -ldflags "-s -w -X github.com/harvester/netconf-migrator/internal/version.Version=$(VERSION)" \
	    -o $(BIN)/$$os-$$arch/netconf-migrator ./cmd/netconf-migrator || exit 1; \
	done
	$(TOOLS) run ./image -repository $(IMAGE_REPOSITORY) -version $(VERSION) -revision $(REVISION) -created $(CREATED) -out $(CURDIR)/dist/image \
	  $(foreach p,$(IMAGE_PLATFORMS),-bin $(p)=$(abspath $(BIN))/$(subst /,-,$(p))/netconf-migrator) $(IMAGE_PUSH)

# The main job on a throw-away control plane beside Harvester's webhooks
# (DEMO_HARVESTER=v1.5 by default); `make demo KUBECONFIG=...` runs only its
# read-only steps against that cluster.
DEMO_KUBECONFIG := $(if $(filter command line,$(origin KUBECONFIG)),$(KUBECONFIG),)
demo: test-assets ## Show migrate, rollback and the webhook at work.
	KUBEBUILDER_ASSETS="$$(hack/setup-test-assets.sh)" NETCONF_MIGRATOR_DEMO_KUBECONFIG="$(DEMO_KUBECONFIG)" $(TOOLS) run ./demo

# The suites, the fuzzing and the benchmarks' smoke run side by side once
# lint and generate pass: each mostly waits on its control planes, and one
# after another they left a core idle (each target's output is printed
# whole when it ends).
test: lint verify-generate ## Everything CI runs.
	@$(MAKE) --no-print-directory -j 3 --output-sync=target unit fuzz-normalizer bench-smoke

# The suites against a real etcd and kube-apiserver find them through
# KUBEBUILDER_ASSETS; the script installs or builds them once per version.
test-assets: ## Install etcd and kubectl, build kube-apiserver and the CNI plugins (cached).
	@hack/setup-test-assets.sh >/dev/null
	@hack/setup-cni-plugins.sh >/dev/null

# For a cold machine (CI): the kube-apiserver build leaves much of a core
# idle (downloads, the linker), so the CNI plugins build beside it and every
# package and test package compiles beside both (go list -export compiles
# without linking: go test links once, later), which the later steps then
# find in the build cache.
# Once the product's test packages are compiled, the same lane compiles
# what the later steps would otherwise compile one after another, each
# while nothing else runs: the tooling module's test binaries (also what
# its vet and the demo need), controller-gen, and the benchmark packages
# and the CLI without the race detector (what the demo, the suites'
# testenv.BuildBinary and the release test build). The kube-apiserver build
# is the longest part and leaves part of a core idle; it compiles
# apimachinery, client-go and the rest at our versions first
# (setup-test-assets.sh), so the benchmark packages find them compiled.
prepare: ## Build the test assets and compile every test binary, side by side.
	@set -e; hack/setup-test-assets.sh >/dev/null & assets=$$!; \
	  hack/setup-cni-plugins.sh >/dev/null & cni=$$!; \
	  compiled=0; $(GO) list -race -test -deps -export $(PKGS) >/dev/null || compiled=1; \
	  $(TOOLS) list -test -deps -export ./... >/dev/null || compiled=1; \
	  $(MAKE) --no-print-directory controller-gen || compiled=1; \
	  $(GO) list -test -deps -export $(BENCH_PKGS) ./cmd/netconf-migrator >/dev/null || compiled=1; \
	  wait $$assets; wait $$cni; \
	  if [ $$compiled -ne 0 ]; then echo "make prepare: compiling failed (above)"; exit 1; fi

# With the race detector: the migration's workers, the webhook and the
# Harvester stand-ins all run concurrently.
# test/consumers runs the real bridge plugin and Whereabouts in network
# namespaces (root; CI is) from NETCONF_MIGRATOR_CNI_PATH.
# The tooling module's tests run beside the product's: both mostly wait on
# their control planes. So do the suites: with go test's default of one
# package per core, two of them on two cores left 40% of the CPU idle, and
# the longest two packages ran after each other's company; UNIT_P packages
# at once keeps the cores busy. -vet=off: make test has run go vet, with
# all of its checks, on every package just before.
# The longest two packages, migration/e2e and operator/e2e, each
# run as two processes side by side, each process on a control plane of its
# own: the tests of UNIT_SHARD in one, the rest in the other (-run and -skip
# of one pattern: every test runs once whatever is renamed; the names are
# checked to be only theirs, as -skip reaches every package).
UNIT_P ?= 4
# CI's test binaries are linked without DWARF: it halves each link (a race
# test binary of migration/e2e, 8.5 to 4.4 CPU-seconds) and nothing reads
# it there (a panic's stack trace comes from the pclntab). Only the go test
# commands get it: the programs tests build keep their own flags.
TEST_LDFLAGS ?= -ldflags=-w
UNIT_SHARD_TESTS := TestKilledRuns TestRecreateKilledAtEachStep TestTwoRunsOneKilledMidReplacement \
  TestPreHookOnEachHarvesterRelease TestSoakMigration TestConcurrentWriter \
  TestSIGTERMWaitsForAReplacementUnderWay TestAKilledOperatorsLeaseIsTakenInBoundedTime TestTheToolUpgradesItself
UNIT_SHARD_PKGS := ./migration/e2e ./operator/e2e
# The tests whose liveness bounds a saturated machine breaks run once the
# others are done: the rehearsal and TestChaos (each on control planes of
# their own; beside the suites on two cores they missed their convergence
# bounds, TestChaos in 2 of 4 full runs of 2026-12-07, and passed alone at
# once), and the deadline test's 3 s attempt. The rehearsal mostly waits
# (Harvester's upgrade steps, its restarts): it runs as a process of its
# own beside the other two (2 runs of 2026-12-07 passed so, the rehearsal
# in 307 s and 405 s, TestChaos and the deadline test in 143 s and 163 s;
# one after another they took 483 s and 512 s in CI).
UNIT_UPGRADE_TESTS := TestChaos TestARetryPastItsDeadlineResumesFirst
UNIT_REHEARSAL_TESTS := TestRehearsal
empty :=
space := $(empty) $(empty)
UNIT_SHARD_NAMES := $(subst $(space),|,$(strip $(UNIT_SHARD_TESTS)))
UNIT_UPGRADE_NAMES := $(subst $(space),|,$(strip $(UNIT_UPGRADE_TESTS) $(UNIT_REHEARSAL_TESTS)))
UNIT_SHARD := ^($(UNIT_SHARD_NAMES))$$
UNIT_UPGRADE := ^($(UNIT_UPGRADE_NAMES))$$
UNIT_TAIL := ^($(subst $(space),|,$(strip $(UNIT_UPGRADE_TESTS))))$$
UNIT_REHEARSAL := ^($(subst $(space),|,$(strip $(UNIT_REHEARSAL_TESTS))))$$
unit: test-assets
	@others=$$(grep -rlE '^func ($(UNIT_SHARD_NAMES)|$(UNIT_UPGRADE_NAMES))\(' --include='*_test.go' . | grep -vE '^\./(migration|operator)/e2e/' || true); \
	  if [ -n "$$others" ]; then echo "make unit: a test of UNIT_SHARD_TESTS, UNIT_UPGRADE_TESTS or UNIT_REHEARSAL_TESTS is also named in $$others"; exit 1; fi
	@export KUBEBUILDER_ASSETS="$$(hack/setup-test-assets.sh)" NETCONF_MIGRATOR_CNI_PATH="$$(hack/setup-cni-plugins.sh)"; \
	  $(TOOLS) test -vet=off $(TEST_LDFLAGS) -count=1 -timeout 20m ./... & tools=$$!; \
	  $(GO) test -vet=off -race $(TEST_LDFLAGS) -count=1 -timeout 25m -run '$(UNIT_SHARD)' $(UNIT_SHARD_PKGS) & shard=$$!; \
	  $(GO) test -vet=off -race $(TEST_LDFLAGS) -p $(UNIT_P) -count=1 -timeout 25m -skip '$(UNIT_SHARD)|$(UNIT_UPGRADE)' $(PKGS); rc=$$?; \
	  wait $$shard || rc=1; wait $$tools || rc=1; \
	  $(GO) test -vet=off -race $(TEST_LDFLAGS) -count=1 -timeout 25m -run '$(UNIT_REHEARSAL)' ./operator/e2e & rehearsal=$$!; \
	  $(GO) test -vet=off -race $(TEST_LDFLAGS) -count=1 -timeout 25m -run '$(UNIT_TAIL)' ./operator/e2e || rc=1; \
	  wait $$rehearsal || rc=1; \
	  echo "make unit took $${SECONDS}s"; exit $$rc

# Every benchmark once, the migration ones on a tenth of their NADs (-short):
# the figures come from hack/bench-*.sh; this keeps the code behind them working.
# Only the packages that have benchmarks are built again without the race
# detector.
BENCH_PKGS = $(shell grep -rl --include='*_test.go' '^func Benchmark' apis cmd convert internal migration operator webhooks test | xargs -n1 dirname | sort -u | sed 's|^|./|')
bench-smoke: test-assets
	KUBEBUILDER_ASSETS="$$(hack/setup-test-assets.sh)" NETCONF_MIGRATOR_CNI_PATH="$$(hack/setup-cni-plugins.sh)" $(GO) test -vet=off $(TEST_LDFLAGS) -short -count=1 -run '^$$' -bench . -benchtime 1x $(BENCH_PKGS); \
	  rc=$$?; echo "make bench-smoke took $${SECONDS}s"; exit $$rc

# The soaks (TestSoak*): the webhook under admissions through the API
# server while its certificate is renewed and a replica restarted, then its
# TLS and paths probed; migrate again and again through a proxy injecting
# faults while a writer rewrites the NADs. make test runs them for 12s each;
# the figures print at the end (BENCHMARKS.md has a 5-minute run's).
SOAK_DURATION ?= 5m
soak: test-assets ## Run the soaks for SOAK_DURATION and print their figures.
	@mkdir -p $(BIN)
	KUBEBUILDER_ASSETS="$$(hack/setup-test-assets.sh)" $(GO) test -race -count=1 -timeout 3h -run '^TestSoak' -v ./webhooks/e2e ./migration/e2e -args -soak=$(SOAK_DURATION) 2>&1 | tee $(BIN)/soak.log | grep -E '^(=== RUN|--- |ok|FAIL|panic)'
	@grep -ho 'SOAK .*' $(BIN)/soak.log

# The chaos soak (TestChaos): two operator replicas, our webhook, CLI runs,
# NADMigrations and the Replace fix beside Harvester v1.6's and v1.9's
# stand-ins and controllers (side by side, each release on a control plane
# of its own), a writer, and faults at random moments
# (SIGKILL and SIGTERM of our processes, Harvester's controllers down past
# the replacement budget, the kube-apiserver killed or restarted on the
# same etcd, etcd paused, our webhook down); nothing lost, nothing someone
# else deleted back, everything converged. make test runs it for 30 s on
# 300 NADs per release; this target for CHAOS_DURATION per release.
CHAOS_DURATION ?= 1h
CHAOS_NADS ?= 3000
chaos: test-assets ## Run the chaos soak for CHAOS_DURATION on CHAOS_NADS NADs and print its figures.
	@mkdir -p $(BIN) && rm -rf $(BIN)/chaos-logs && mkdir -p $(BIN)/chaos-logs
	KUBEBUILDER_ASSETS="$$(hack/setup-test-assets.sh)" $(GO) test -count=1 -timeout 3h -run '^TestChaos$$' -v ./operator/e2e -args -chaos=$(CHAOS_DURATION) -chaos-nads=$(CHAOS_NADS) -chaos-logs=$(abspath $(BIN))/chaos-logs 2>&1 | tee $(BIN)/chaos.log | grep -E '^(=== RUN|--- |ok|FAIL|panic)|CHAOS|chaos_test'
	@grep -ho 'CHAOS .*' $(BIN)/chaos.log

# The rehearsal (TestRehearsal): one control plane taken through every
# Harvester release in order (v1.5 to v1.9) as Harvester upgrades it, with
# the webhook and the operator installed all along: Harvester's own
# pre_upgrade_manifest (from its module at each release's tag) sourcing the
# pre-hook, the charts changing with Harvester's controllers down, writers,
# a GitOps re-applier, the operator SIGKILLed mid-replacement, the
# kube-apiserver restarted and etcd stalled; invariants at every step, and
# each release's advice followed on it. make test runs it short (10 nested
# NADs, 2 s of writers per release, the kube-apiserver's watches given 2 s
# to end when it restarts); this target with REHEARSAL_NADS,
# REHEARSAL_CALM and REHEARSAL_WATCH_GRACE (0s: kube-apiserver's default,
# so each restart waits on its watches until it is killed 30 s later, as
# by a kubelet), printing the timeline (BENCHMARKS.md keeps one).
REHEARSAL_CALM ?= 60s
REHEARSAL_NADS ?= 300
REHEARSAL_WATCH_GRACE ?= 0s
rehearsal: test-assets ## Take one cluster through every Harvester release with the tool installed, and print the timeline.
	@mkdir -p $(BIN)
	KUBEBUILDER_ASSETS="$$(hack/setup-test-assets.sh)" $(GO) test -count=1 -timeout 2h -run '^TestRehearsal$$' -v ./operator/e2e -args -rehearsal-calm=$(REHEARSAL_CALM) -rehearsal-nads=$(REHEARSAL_NADS) -rehearsal-watch-grace=$(REHEARSAL_WATCH_GRACE) 2>&1 | tee $(BIN)/rehearsal.log | grep -E '^(=== RUN|--- |ok|FAIL|panic)|REHEARSAL|rehearsal_test'

# Fuzzing instruments every package it builds: the normalizer's are few,
# the webhook's handler pulls in controller-runtime and client-go, minutes
# of compiling on a fresh machine. make test fuzzes the normalizer (the pure
# logic); the handler's seed corpus runs as a test in make unit, and make
# fuzz fuzzes both.
fuzz: fuzz-normalizer ## Run each fuzz target for FUZZTIME.
	$(GO) test ./webhooks -run '^$$' -fuzz '^FuzzAdmissionReview$$' -fuzztime $(FUZZTIME)

fuzz-normalizer:
	$(GO) test ./apis/netconf -run '^$$' -fuzz '^FuzzNormalize$$' -fuzztime $(FUZZTIME)

lint: ## gofmt and go vet.
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(TOOLS) vet ./...

bench: ## Go benchmarks of the normalizer.
	$(GO) test ./apis/netconf -run '^$$' -bench . -benchmem -count 5

# The install bundles, rendered from config/ with kubectl's kustomize, and
# the Helm chart with its default values (Helm's Go packages, linted too):
# neither needs a cluster or the kube-apiserver build.
manifests: ## Render dist/install.yaml, dist/install-cert-manager.yaml, dist/migrate-job.yaml, dist/chart.yaml.
	@command -v kubectl >/dev/null || { echo "make manifests needs kubectl (apt-get install kubectl)"; exit 1; }
	@mkdir -p dist
	kubectl kustomize config/default > dist/install.yaml
	kubectl kustomize config/cert-manager > dist/install-cert-manager.yaml
	kubectl kustomize config/job > dist/migrate-job.yaml
	$(TOOLS) run ./chart -chart $(CHART) > dist/chart.yaml

# The chart packaged as `helm package` does, pushed as `helm push` does
# when CHART_PUSH names an OCI repository (the release workflow).
CHART_PUSH ?=
chart-package: ## Package the chart into dist/chart (and push it to CHART_PUSH).
	$(TOOLS) run ./chart -chart $(CHART) -package $(CURDIR)/dist/chart $(if $(CHART_PUSH),-push $(CHART_PUSH))

clean:
	rm -rf $(BIN) dist

# controller-gen writes the deep-copy functions of every type under apis/
# and the NADMigration CRD (the NAD CRD is Multus's, kept as published).
# It is the tooling module's tool (hack/go.mod pins its version), built at
# our k8s.io and golang.org/x versions: `go run ...@version` built it in a
# module of its own, compiling apimachinery, apiextensions-apiserver and
# apiserver a second time (CI's time is CPU on two cores).
CONTROLLER_GEN_BIN := $(abspath $(BIN))/controller-gen
CONTROLLER_GEN ?= $(CONTROLLER_GEN_BIN)
# Built only when it is the one run: verify-generate passes the copy of
# the tree it generates in its own.
CONTROLLER_GEN_DEP := $(if $(filter $(CONTROLLER_GEN_BIN),$(CONTROLLER_GEN)),controller-gen)
controller-gen: ## Build controller-gen from the tooling module into bin/.
	@$(TOOLS) build -o $(CONTROLLER_GEN_BIN) sigs.k8s.io/controller-tools/cmd/controller-gen
generate: $(CONTROLLER_GEN_DEP) ## Regenerate deep-copy functions and the NADMigration CRD.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./apis/...
	$(CONTROLLER_GEN) crd:maxDescLen=400 paths=./apis/netconfmigrator/... output:crd:artifacts:config=config/crd/bases
	cp config/crd/bases/netconf-migrator.harvesterhci.io_nadmigrations.yaml config/chart/netconf-migrator/files/nadmigrations-crd.yaml
	cp config/crd/bases/netconf-migrator.harvesterhci.io_nadmigrations.yaml apis/netconfmigrator/v1alpha1/zz_generated.crd.yaml

# Fails when the generated files differ from what make generate writes. It
# generates in a copy of the tree: make test runs beside the demo, which
# reads the CRD that an in-place generate rewrites.
verify-generate: $(CONTROLLER_GEN_DEP)
	@CONTROLLER_GEN="$(CONTROLLER_GEN)" hack/verify-generate.sh
