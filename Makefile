# The two commands of the README: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
STAMP := $(VENV)/.flowprobe-installed

.PHONY: demo demo-fig7 test venv report clean-results lint

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

SNAKEMAKE := $(BIN)/snakemake --cores $(CORES) --configfile config/demo.yaml

# Fig. 7 first (a few minutes), then every other demo figure, the verdicts and the HTML report.
demo: demo-fig7
	$(SNAKEMAKE)
	$(SNAKEMAKE) --report report.html
	@echo "figures: results/figures/  tables: results/tables/  report: report.html"

demo-fig7: $(STAMP)
	$(SNAKEMAKE) results/figures/fig7.pdf

report: $(STAMP)
	$(SNAKEMAKE) --report report.html

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(SNAKEMAKE) --lint

clean-results:
	rm -rf results .snakemake
