"""Confusion counts of predicted vs observed verdicts (see workflow/rules/sweep.smk)."""
import pandas as pd

from flowprobe.sweep import prediction_quality
from flowprobe.workflow import setup_logging

sm = snakemake  # noqa: F821
setup_logging(sm.log[0], sm.threads)
prediction_quality(pd.read_csv(sm.input.csv), sm.params.resolutions).to_csv(sm.output.csv, index=False)
