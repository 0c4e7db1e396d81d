"""Probe accuracy per probe point (see workflow/rules/analysis.smk)."""
from flowprobe.analysis.probes import probe_table
from flowprobe.train import resolve_device
from flowprobe.workflow import setup_logging

sm = snakemake  # noqa: F821
setup_logging(sm.log[0], sm.threads)
p = sm.params
table = probe_table(sm.input.h5, device=resolve_device(p.device), **p.probes)
table.to_csv(sm.output.csv, index=False)
