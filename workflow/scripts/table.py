"""Aggregate the analyses of a figure's runs into results/tables/{figure}.csv (+ mean ± std summary)."""
import _checkout  # noqa: F401,I001  (this checkout's src/ first on sys.path)
from flowprobe.figures import figure_kind
from flowprobe.tables import figure_table, summarise
from flowprobe.logs import start_job

sm = snakemake  # noqa: F821
start_job(sm)
kind = figure_kind(sm.params.kind)
table = figure_table(kind, sm.params.members)
table.to_csv(sm.output.csv, index=False)
summarise(kind, table).to_csv(sm.output.summary, index=False)
