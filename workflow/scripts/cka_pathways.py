"""Layer × layer CKA between two pathways of one block (see workflow/rules/analysis.smk)."""
import _checkout  # noqa: F401,I001  (this checkout's src/ first on sys.path)
from flowprobe.analysis.cka import cka_pathway_table
from flowprobe.logs import start_job

sm = snakemake  # noqa: F821
start_job(sm)
p = sm.params
table = cka_pathway_table(sm.input.h5, pathways=p.pathways, split=p.split, batch_size=p.batch_size, debiased=p.debiased)
table.to_csv(sm.output.csv, index=False)
