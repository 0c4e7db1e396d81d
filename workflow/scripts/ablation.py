"""Accuracy with pathways removed (see workflow/rules/analysis.smk)."""
from flowprobe.analysis.ablation import ablation_table
from flowprobe.data import Batches
from flowprobe.workflow import load_trained, run_data, setup_logging

sm = snakemake  # noqa: F821
setup_logging(sm.log[0])
p = sm.params
model, _ = load_trained(sm.input.model, p.device)
data = run_data(p.run, p.data_root, p.download)
device = next(model.parameters()).device


def test_batches():
    return Batches(data.test, batch_size=512, mean=data.mean, std=data.std, device=device)


ablation_table(model, test_batches).to_csv(sm.output.csv, index=False)
