# The README's two commands are `make run` and `make test`; everything else is a step of them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export GOTOOLCHAIN := local

.PHONY: run test bench simulate docs chart-crds venv system-tools binaries lint typecheck pytest format clean

## run: the whole product on a local control plane (built from source on first use) until Ctrl-C
run: venv system-tools binaries
	PYTHONPATH=hack $(BIN)/python -m devcluster

## test: lint, type-check and run the whole suite against a real local kube-apiserver
test: venv system-tools binaries lint typecheck pytest

## bench: the ingress against nginx, and the operator at 10,000 Secrets (writes bench/results.md)
bench: venv system-tools binaries
	PYTHONPATH=hack $(BIN)/python bench/run.py $(BENCH_ARGS)

## simulate: a month of real CA behaviour against the real operator core (writes bench/simulation.md)
simulate: venv
	PYTHONPATH=hack $(BIN)/python -m simulation --out bench/simulation.md $(SIMULATE_ARGS)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

system-tools:
	hack/install-system-tools.sh

binaries:
	hack/controlplane/build.sh

lint: venv
	$(BIN)/ruff check operator tests hack bench
	$(BIN)/ruff format --check operator tests hack bench
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy

# pytest exits 5 when it collected nothing: that is a broken suite, not a pass.
pytest: venv
	@set +e; $(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing the run" >&2; exit 1; fi; \
	exit $$rc

## docs: regenerate the README's configuration reference from the chart's values.yaml
docs: venv chart-crds
	$(BIN)/python hack/values_reference.py --write README.md

# The chart's templates/crds.yaml reads its copy of crds/ (Helm reads nothing outside the
# chart); a test fails when the copy is stale.
chart-crds:
	rm -rf charts/ocsp-stapler/files/crds
	mkdir -p charts/ocsp-stapler/files/crds
	cp crds/*.yaml charts/ocsp-stapler/files/crds/

format: venv
	$(BIN)/ruff format operator tests hack bench
	$(BIN)/ruff check --fix operator tests hack bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
