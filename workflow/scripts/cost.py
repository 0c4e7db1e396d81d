"""What one run × seed costs: parameters, FLOPs, train accuracy, seconds per epoch (see workflow/rules/sweep.smk)."""
from flowprobe.prune import run_cost
from flowprobe.workflow import setup_logging

sm = snakemake  # noqa: F821
setup_logging(sm.log[0], sm.threads)
run_cost(sm.input.model, sm.input.train_log, sm.wildcards.run, sm.params.pruned).to_csv(sm.output.csv, index=False)
