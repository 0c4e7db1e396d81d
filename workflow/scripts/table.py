"""Aggregate the analyses of a figure's runs into results/tables/{figure}.csv (+ mean ± std summary)."""
from flowprobe.tables import figure_table, summarise
from flowprobe.workflow import start_job

sm = snakemake  # noqa: F821
start_job(sm)
table = figure_table(sm.params.kind, sm.params.members)
table.to_csv(sm.output.csv, index=False)
summarise(sm.params.kind, table).to_csv(sm.output.summary, index=False)
