# The two commands of the README: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
STAMP := $(VENV)/.flowprobe-installed
LINT_STAMP := $(VENV)/.flowprobe-lint-installed

.PHONY: demo demo-fig7 test venv report clean-results lint

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# The lint tools (snakefmt) and pytest-xdist only for `make test` / `make lint`, not for the demo.
$(LINT_STAMP): $(STAMP) requirements-dev.lock
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-dev.lock
	touch $@

# Targets go before the options: --configfile takes every following word as a file.
DEMO_OPTS := --cores $(CORES) --configfile config/demo.yaml

# Fig. 7 first (a few minutes), then every other demo figure, the verdicts and the HTML report.
demo: demo-fig7
	$(BIN)/snakemake $(DEMO_OPTS)
	$(BIN)/snakemake --report report.html $(DEMO_OPTS)
	@echo "figures: results/figures/  tables: results/tables/  report: report.html"

demo-fig7: $(STAMP)
	$(BIN)/snakemake results/figures/fig7.pdf $(DEMO_OPTS)

report: $(STAMP)
	$(BIN)/snakemake --report report.html $(DEMO_OPTS)

# The workflow's own checks first (Snakemake's linter, snakefmt), then the test suite on CORES
# workers, one test file per worker at a time (a file's module fixtures are built once), the
# slowest files first (tests/conftest.py).
test: lint
	$(BIN)/python -m pytest -q -n $(CORES) --dist loadfile tests

lint: $(LINT_STAMP)
	$(BIN)/snakemake --lint --configfile config/demo.yaml
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow

clean-results:
	rm -rf results .snakemake
