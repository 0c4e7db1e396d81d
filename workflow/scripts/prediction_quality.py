"""Confusion counts of predicted vs observed verdicts (see workflow/rules/sweep.smk)."""
import _checkout  # noqa: F401,I001  (this checkout's src/ first on sys.path)
import pandas as pd

from flowprobe.sweep import prediction_quality
from flowprobe.logs import start_job

sm = snakemake  # noqa: F821
start_job(sm)
prediction_quality(pd.read_csv(sm.input.csv), sm.params.resolutions).to_csv(sm.output.csv, index=False)
