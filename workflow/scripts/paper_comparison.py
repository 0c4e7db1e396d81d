"""The paper's values and claims beside the measured ones (see workflow/rules/comparison.smk)."""
import _checkout  # noqa: F401,I001  (this checkout's src/ first on sys.path)
import pandas as pd

from flowprobe.comparison import paper_comparison
from flowprobe.logs import start_job

sm = snakemake  # noqa: F821
start_job(sm)
p = sm.params
verdicts = pd.read_csv(sm.input[0])
paper_comparison(p.runs, p.members, verdicts).to_csv(sm.output.csv, index=False)
