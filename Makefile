# The two commands of the README: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
STAMP := $(VENV)/.flowprobe-installed

.PHONY: demo test venv figures report clean-results lint

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/demo.yaml results/figures/fig7.pdf

figures: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/demo.yaml

report: figures
	$(BIN)/snakemake --cores $(CORES) --configfile config/demo.yaml --report report.html

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

lint: $(STAMP)
	$(BIN)/snakemake --lint --configfile config/demo.yaml

clean-results:
	rm -rf results .snakemake
