"""Aggregate the analyses of a figure's runs into results/tables/{figure}.csv."""
from flowprobe.tables import figure_table
from flowprobe.workflow import setup_logging

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
figure_table(sm.params.kind, sm.params.members).to_csv(sm.output.csv, index=False)
