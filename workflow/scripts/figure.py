"""Draw results/figures/{figure}.pdf and .png from its table."""
import _checkout  # noqa: F401,I001  (this checkout's src/ first on sys.path)
import pandas as pd

from flowprobe.plots import draw_figure
from flowprobe.logs import start_job

sm = snakemake  # noqa: F821
start_job(sm)
draw_figure(sm.params.kind, pd.read_csv(sm.input.csv), sm.output.pdf, sm.output.png, title=sm.params.title)
