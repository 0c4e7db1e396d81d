"""Saturation per probe point (see workflow/rules/analysis.smk)."""
import _checkout  # noqa: F401,I001  (this checkout's src/ first on sys.path)
from flowprobe.analysis.saturation import saturation_table
from flowprobe.logs import start_job

sm = snakemake  # noqa: F821
start_job(sm)
saturation_table(sm.input.h5, **sm.params.saturation).to_csv(sm.output.csv, index=False)
