"""Verdicts over every run of the config (see workflow/rules/comparison.smk)."""
from flowprobe.tables import figure_table
from flowprobe.verdicts import verdict_table
from flowprobe.workflow import setup_logging

sm = snakemake  # noqa: F821
setup_logging(sm.log[0], sm.threads)
p = sm.params
probes = figure_table("layer_probes", p.members)
verdict_table(probes, p.resolutions, **p.verdicts).to_csv(sm.output.csv, index=False)
