"""Probe accuracy per probe point (see workflow/rules/analysis.smk)."""
import _checkout  # noqa: F401,I001  (this checkout's src/ first on sys.path)
from flowprobe.analysis.probes import probe_table
from flowprobe.devices import resolve_device
from flowprobe.logs import start_job

sm = snakemake  # noqa: F821
start_job(sm)
p = sm.params
table = probe_table(sm.input.h5, device=resolve_device(p.device), **p.probes)
table.to_csv(sm.output.csv, index=False)
