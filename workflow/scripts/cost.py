"""What one run × seed costs: parameters, FLOPs, train accuracy, seconds per epoch (see workflow/rules/sweep.smk)."""
import _checkout  # noqa: F401,I001  (this checkout's src/ first on sys.path)
from flowprobe.prune import run_cost
from flowprobe.logs import start_job

sm = snakemake  # noqa: F821
start_job(sm)
run_cost(sm.input.model, sm.input.train_log, sm.wildcards.run, sm.params.pruned).to_csv(sm.output.csv, index=False)
