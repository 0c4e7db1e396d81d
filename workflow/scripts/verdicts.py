"""Verdicts over every run of the config (see workflow/rules/comparison.smk)."""
import _checkout  # noqa: F401,I001  (this checkout's src/ first on sys.path)
from flowprobe.tables import figure_table
from flowprobe.verdicts import verdict_table
from flowprobe.logs import start_job

sm = snakemake  # noqa: F821
start_job(sm)
p = sm.params
probes = figure_table("layer_probes", p.members)
verdict_table(probes, p.resolutions, **p.verdicts).to_csv(sm.output.csv, index=False)
