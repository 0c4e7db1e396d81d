"""Draw results/figures/{figure}.pdf and .png from its table."""
import pandas as pd

from flowprobe.plots import draw_figure
from flowprobe.workflow import setup_logging

sm = snakemake  # noqa: F821
setup_logging(sm.log[0], sm.threads)
draw_figure(sm.params.kind, pd.read_csv(sm.input.csv), sm.output.pdf, sm.output.png, title=sm.params.title)
