# Silo's two commands are `make demo` and `make test`; the rest are their parts.
#
# Caches live outside the clone (SILO_CACHE, default ~/.cache/silo): the cargo target dir,
# the simulator's venv and the built kube-apiserver/kubectl. Nothing depends on them
# existing: `make tools` builds whatever is missing.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

export SILO_CACHE ?= $(HOME)/.cache/silo
export CARGO_TARGET_DIR ?= $(SILO_CACHE)/target
export SILO_KUBE_BIN_DIR ?= $(SILO_CACHE)/bin
export SILO_VENV ?= $(SILO_CACHE)/venv
BENCH_VENV ?= $(SILO_CACHE)/bench-venv
BENCH_MATPLOTLIB := 3.11.2
CARGO ?= cargo
SILO := $(CARGO_TARGET_DIR)/debug/silo
TESTENV := $(CARGO_TARGET_DIR)/debug/silo-testenv

.PHONY: help
help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

.PHONY: tools
tools: ## Install what is missing: rustfmt/clippy, podman, the simulator venv, kube-apiserver, kubectl, promtool.
	@command -v rustup >/dev/null && rustup component add rustfmt clippy >/dev/null 2>&1 || true
	hack/system-tools.sh
	tests/awssim/setup.sh
	tests/kube/build.sh
	tests/monitoring/build.sh
	tests/kstatus/build.sh

.PHONY: build
build: ## Build silo and the test environment.
	$(CARGO) build --workspace --bins

.PHONY: crds
crds: build ## Regenerate crds/ from the Rust types.
	$(SILO) crd > crds/silo.dev.yaml

.PHONY: crds-check
crds-check: build ## Fail when crds/ differs from what `silo crd` prints.
	@diff -u crds/silo.dev.yaml <($(SILO) crd) || { echo "crds/ is stale: run 'make crds' and commit" >&2; exit 1; }
	@echo "crds/ matches silo crd"

.PHONY: docs-check
docs-check: build ## Fail on a broken relative link or anchor in the docs, a runbook_url without its runbook, or an undocumented `silo run` flag.
	python3 hack/check-docs.py --self-test
	python3 hack/check-docs.py $(SILO)

.PHONY: lint
lint: ## cargo fmt --check, clippy with warnings denied, shellcheck, and the module layers (controller/layers.txt).
	python3 hack/check-layers.py --self-test
	python3 hack/check-layers.py
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	shellcheck .ci/run $$(git ls-files '*.sh')

.PHONY: unit
unit: ## Unit tests: pure planning logic, and the IAM policy against Silo's calls; no network.
	$(CARGO) test --workspace --lib --bins
	$(CARGO) test -p silo-iam-policy-tests --tests

.PHONY: sim-test
sim-test: ## Tests of the AWS simulator's fault and quota layer.
	$(SILO_VENV)/bin/python -m pytest -q tests/awssim

.PHONY: image
image: ## Build the images silo:dev and silo-awssim:dev offline, with podman or docker.
	images/build.sh

.PHONY: e2e
e2e: build ## End-to-end suites against a real kube-apiserver and the AWS simulator (install: the images).
	$(CARGO) test -p silo-testenv --tests -- --nocapture

# Every end-to-end suite but install, the only one that needs the images.
E2E_WITHOUT_IMAGES := $(filter-out install,$(basename $(notdir $(wildcard tests/tests/*.rs))))
# How many of them run at once (hack/run-suites.sh): they wait on the simulator, not the CPU.
E2E_LANES ?= 3

.PHONY: e2e-and-image
e2e-and-image: build ## What `make test` runs: the images build (niced, in the background) while the suites that do not need them run, E2E_LANES at a time; then install.
	$(CARGO) test -p silo-testenv --tests --no-run
	@log="$(SILO_CACHE)/image-build.log"; mkdir -p "$(SILO_CACHE)"; \
	echo "building the images in the background (nice 19; log: $$log)"; \
	nice -n 19 images/build.sh >"$$log" 2>&1 & image=$$!; \
	suites=0; CARGO="$(CARGO)" hack/run-suites.sh $(E2E_LANES) "$(SILO_CACHE)/suites" $(E2E_WITHOUT_IMAGES) || suites=$$?; \
	if ! wait $$image; then echo "make image failed; the end of $$log:" >&2; tail -n 40 "$$log" >&2; exit 1; fi; \
	tail -n 3 "$$log"; \
	if [[ $$suites != 0 ]]; then exit $$suites; fi
	$(CARGO) test -p silo-testenv --test install -- --nocapture

.PHONY: demo-check
demo-check: build ## Run the demo unattended until every example tenant is Ready.
	$(TESTENV) demo --silo $(SILO) --exit-when-ready --timeout-seconds 300

# A small benchmark held against request ceilings: counts per tenant, never times.
BENCH_CHECK_FLAGS := BENCH_SCENARIOS=onboard BENCH_TENANTS=50 BENCH_PLOTS=false BENCH_CHECK=tests/bench/ceilings.json

.PHONY: bench-check
bench-check: build ## A 50-tenant onboarding with the debug build; fails when a request count per tenant exceeds tests/bench/ceilings.json.
	rm -rf "$(SILO_CACHE)/bench-check"
	$(BENCH_CHECK_FLAGS) BENCH_OUT="$(SILO_CACHE)/bench-check" $(CARGO_TARGET_DIR)/debug/silo-bench --silo $(SILO)

.PHONY: test
test: tools lint unit crds-check docs-check sim-test e2e-and-image demo-check bench-check ## Everything CI runs (`make image` and `make e2e` overlapped).
	@echo "make test: all checks passed"

.PHONY: demo
demo: tools build ## Start a local control plane and AWS simulator, run Silo, apply examples/, watch.
	$(TESTENV) demo --silo $(SILO) $(DEMO_FLAGS)

.PHONY: bench
bench: tools ## Benchmarks: release silo against the local environment with AWS-like quotas (BENCH_* variables).
	$(CARGO) build --release -p silo -p silo-testenv
	@if [[ "$$(cat $(BENCH_VENV)/.matplotlib 2>/dev/null)" != "$(BENCH_MATPLOTLIB)" ]]; then \
	  echo "creating the plotting venv in $(BENCH_VENV) (matplotlib $(BENCH_MATPLOTLIB))"; \
	  python3 -m venv $(BENCH_VENV); \
	  $(BENCH_VENV)/bin/pip install --quiet --disable-pip-version-check matplotlib==$(BENCH_MATPLOTLIB); \
	  echo $(BENCH_MATPLOTLIB) > $(BENCH_VENV)/.matplotlib; \
	fi
	$(CARGO_TARGET_DIR)/release/silo-bench --silo $(CARGO_TARGET_DIR)/release/silo --python $(BENCH_VENV)/bin/python
