# vectordb-operator
SHELL := /usr/bin/env bash
BIN := $(CURDIR)/bin
CONTROLLER_GEN := $(BIN)/controller-gen
# The release version is the chart's appVersion (v-prefixed): the tag of the images built here and
# pushed by .github/workflows/release.yaml, and the default image tag of the chart.
APP_VERSION := $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$$/\1/p' charts/vectordb-operator/Chart.yaml)
VERSION ?= $(APP_VERSION)
LDFLAGS := -s -w -X github.com/vectordb-io/vectordb-operator/internal/version.Version=$(VERSION)
GO_TEST_FLAGS ?= -count=1 -timeout 40m
GOTESTSUM := $(BIN)/gotestsum
# go test -json of the last make test: `make test-slowest` (and .ci/run) read it.
TEST_JSON ?= $(BIN)/test-output.json
export VECTORDB_BIN_DIR := $(BIN)

.PHONY: all
all: build

##@ Development

.PHONY: tools
tools: ## Build or install kube-apiserver, kube-controller-manager, etcd, MinIO, helm, controller-gen, actionlint, dynalite into bin/ (cached by version).
	bash hack/tools.sh all

.PHONY: manifests
manifests: ## Generate the CRD and RBAC under config/ (and the chart's copy of the CRD).
	@test -x $(CONTROLLER_GEN) || bash hack/tools.sh controller-gen
	$(CONTROLLER_GEN) rbac:roleName=vectordb-operator-manager crd paths="./..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	go run ./hack/crdtemplate
	@if [ -d charts/vectordb-operator/templates ]; then bash hack/sync-chart-crds.sh; fi

.PHONY: generate
generate: ## Generate deepcopy code.
	@test -x $(CONTROLLER_GEN) || bash hack/tools.sh controller-gen
	$(CONTROLLER_GEN) object paths="./api/..."

.PHONY: fmt
fmt:
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet:
	go vet ./...

.PHONY: build
build: ## Build the manager and the embedder into bin/.
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/manager ./cmd/manager
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/embedder ./cmd/embedder

.PHONY: test
test: vet build ## go vet and every test (envtest, kube-controller-manager, MinIO, dynalite and the fakes).
	@test -x $(GOTESTSUM) || bash hack/tools.sh gotestsum
	@# test/e2e first: the longest package starts as soon as it is built instead of ~40th of 50. The
	@# summary at the end lists every skipped test with its reason and every failure's output.
	$(GOTESTSUM) --format pkgname --jsonfile $(TEST_JSON) -- $(GO_TEST_FLAGS) ./test/e2e ./...

.PHONY: test-slowest
test-slowest: ## The 15 slowest tests of the last make test, with their durations.
	@test -x $(GOTESTSUM) || bash hack/tools.sh gotestsum
	$(GOTESTSUM) tool slowest --jsonfile $(TEST_JSON) --threshold 0s --num 15

.PHONY: bench
bench: build ## Measure DESIGN §9's figures on this machine (about 30 minutes) and write docs/benchmarks.md.
	go run ./bench -out docs/benchmarks.md

.PHONY: version
version: ## Print the version the images and binaries are built with (the chart's appVersion).
	@echo $(VERSION)

.PHONY: help
help:
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

##@ Packaging

IMAGE_REPO ?= ghcr.io/vectordb-io
MANAGER_IMG ?= $(IMAGE_REPO)/vectordb-operator:$(VERSION)
EMBEDDER_IMG ?= $(IMAGE_REPO)/vectordb-embedder:$(VERSION)
HELM := $(BIN)/helm
CHART := charts/vectordb-operator

.PHONY: docker-build
docker-build: ## Build the manager and embedder images (needs a Docker engine).
	@command -v docker >/dev/null 2>&1 || { echo "docker-build: no docker command here; build on a machine with a Docker engine" >&2; exit 1; }
	docker build --target manager --build-arg VERSION=$(VERSION) -t $(MANAGER_IMG) .
	docker build --target embedder --build-arg VERSION=$(VERSION) -t $(EMBEDDER_IMG) .

PLATFORMS ?= linux/amd64,linux/arm64

.PHONY: docker-buildx
docker-buildx: ## Build both images for PLATFORMS and push them (docker buildx and a registry login; works on an arm64 laptop).
	@command -v docker >/dev/null 2>&1 || { echo "docker-buildx: no docker command here; build on a machine with a Docker engine" >&2; exit 1; }
	docker buildx build --platform $(PLATFORMS) --target manager --build-arg VERSION=$(VERSION) -t $(MANAGER_IMG) --push .
	docker buildx build --platform $(PLATFORMS) --target embedder --build-arg VERSION=$(VERSION) -t $(EMBEDDER_IMG) --push .

.PHONY: lint-workflows
lint-workflows: ## Lint .github/workflows with actionlint.
	@test -x $(BIN)/actionlint || bash hack/tools.sh actionlint
	$(BIN)/actionlint

.PHONY: helm-lint
helm-lint: ## Lint the chart with its default values and with every option on.
	@test -x $(HELM) || bash hack/tools.sh helm
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) -f $(CHART)/ci/all-on-values.yaml

.PHONY: reference
reference: ## Regenerate docs/reference.md from the CRD.
	go run ./hack/crdref -crds config/crd/bases -out docs/reference.md

.PHONY: demo
demo: tools build ## Run the whole product locally on a generated 100,000-row CSV (DEMO_ARGS=--keep to leave it up).
	go run ./hack/demo $(DEMO_ARGS)
