"""CKA of every probe point with the output (see workflow/rules/analysis.smk)."""
import _checkout  # noqa: F401,I001  (this checkout's src/ first on sys.path)
from flowprobe.analysis.cka import cka_output_table
from flowprobe.logs import start_job

sm = snakemake  # noqa: F821
start_job(sm)
p = sm.params
cka_output_table(sm.input.h5, split=p.split, debiased=p.debiased).to_csv(sm.output.csv, index=False)
