# Verdict: every target creates and reuses the virtualenv in .venv by itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Two pytest workers (pytest-xdist), each test file whole on one of them (its module fixtures
# and servers stay together): the suite's tests mostly wait on real servers, Redis and
# subprocesses, so two halve the wall time on a 2-core machine. PYTEST_WORKERS= runs serially.
PYTEST_WORKERS ?= -n 2 --dist loadfile
LINTED := $(wildcard src tests benchmarks scripts examples)

.PHONY: run test lint proto bench bench-all bench-quick profile fuzz faults faults-quick clean help

help:  ## list targets
	@grep -E '^[a-z]+:.*##' Makefile | sed 's/:.*## /\t/'

# Runtime dependencies at constraints.txt's versions (the image's): a fresh clone tests what
# ships, not whatever PyPI released since (redis-py 8.2 typed PubSub.aclose and mypy --strict
# failed make lint on a fresh clone).
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' --constraint constraints.txt
	touch $(STAMP)

run: $(STAMP)  ## serve policies/ (default store lending) on 127.0.0.1:50051, in-memory entities, one process
	$(BIN)/verdict serve --stores policies --default-store lending --listen 127.0.0.1:50051 --workers 1

test: $(STAMP)  ## the whole test suite, then the sample policy suites with full coverage
	@$(BIN)/pytest -q $(PYTEST_WORKERS) --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5)"; exit 1; fi; \
	exit $$rc
	$(BIN)/verdict test --stores policies --coverage --min-coverage 100

lint: $(STAMP)  ## ruff check, ruff format --check, mypy --strict (src, tests, benchmarks), import layers
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy --strict src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile
	$(MAKE) --no-print-directory k8s-lint

.PHONY: k8s-lint
k8s-lint: $(STAMP)  ## render k8s/overlays/* with kustomize; kubernetes-validate --strict (Kubernetes 1.33) + CRD schemas
	$(BIN)/python scripts/k8s_lint.py --kubernetes-version 1.33.0

proto: $(STAMP)  ## regenerate src/verdict/_gen from proto/
	$(BIN)/python scripts/gen_proto.py

bench: $(STAMP)  ## the hot path side by side (floor, lending, policy count, batch, Cerbos; ~5 min); results in benchmarks/results/hot_path*
	$(BIN)/python -m benchmarks.bench_hot_path

bench-all: bench  ## every benchmark: the hot path, then entity store, policy tests, batch, engine, Cedar's costs, loop stall, JSON values, entities load, edge, event loop
	$(BIN)/python -m benchmarks.bench_entity_store
	$(BIN)/python benchmarks/bench_policy_tests.py
	$(BIN)/python -m benchmarks.bench_batch
	$(BIN)/python -m benchmarks.bench_engine
	$(BIN)/python -m benchmarks.bench_cedar_costs
	$(BIN)/python -m benchmarks.bench_loop_stall
	$(BIN)/python -m benchmarks.bench_json_values
	$(BIN)/python -m benchmarks.bench_entities_load
	$(BIN)/python -m benchmarks.bench_edge
	$(BIN)/python -m benchmarks.bench_event_loop

bench-quick: $(STAMP)  ## smoke runs (~2 min): the hot path --quick and the entity store benchmark --quick
	$(BIN)/python -m benchmarks.bench_hot_path --quick
	$(BIN)/python -m benchmarks.bench_entity_store --quick --out /tmp/verdict-bench-quick

profile: $(STAMP)  ## py-spy flame graph of one server answering the lending mix at c=16: benchmarks/results/hot_path_profile.svg
	$(BIN)/python -m benchmarks.bench_hot_path --profile-only

fuzz: $(STAMP)  ## the differential test against cedarpy with 20,000 fresh random examples per store
	VERDICT_DIFF_EXAMPLES=$${VERDICT_DIFF_EXAMPLES:-20000} VERDICT_DIFF_RANDOM=1 \
	  $(BIN)/pytest -q -p no:cacheprovider tests/security/test_differential.py

faults: $(STAMP)  ## fault suite: real server + Redis under load, faults injected; table in benchmarks/results/faults.json
	$(BIN)/python -m tests.faults --out benchmarks/results/faults.json

faults-quick: $(STAMP)  ## the fault suite with short phases (~40 s), as CI runs it; fails on any breach
	$(BIN)/python -m tests.faults --quick --out /tmp/verdict-faults-quick.json

# The proto contract gate: buf from npm, pinned by tools/buf/package-lock.json (node_modules is
# git-ignored and reused once installed). buf breaking compares proto/ with the commit BUF_AGAINST
# (the previous one by default; on a branch, BUF_AGAINST=main).
BUF := tools/buf/node_modules/.bin/buf
BUF_AGAINST ?= HEAD~1

.PHONY: tools buf

# --ignore-scripts: the package's postinstall only swaps its node launcher for the binary.
$(BUF): tools/buf/package.json tools/buf/package-lock.json
	cd tools/buf && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $(BUF)

tools: $(BUF)  ## install the pinned buf into tools/buf (skipped when already installed)

buf: $(STAMP) $(BUF)  ## buf lint on proto/, buf breaking against BUF_AGAINST (default HEAD~1)
	$(BUF) lint
	$(BIN)/python scripts/proto_breaking.py --buf $(BUF) --against '$(BUF_AGAINST)'

# make lint checks the contract; make test needs buf for the contract tests.
lint: buf
test: $(BUF)

clean:  ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
