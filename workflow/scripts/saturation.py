"""Saturation per probe point (see workflow/rules/analysis.smk)."""
from flowprobe.analysis.saturation import saturation_table
from flowprobe.workflow import setup_logging

sm = snakemake  # noqa: F821
setup_logging(sm.log[0], sm.threads)
saturation_table(sm.input.h5, **sm.params.saturation).to_csv(sm.output.csv, index=False)
