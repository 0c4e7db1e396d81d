"""Mean |gradient| per probe point of the trained model (see workflow/rules/analysis.smk)."""
import _checkout  # noqa: F401,I001  (this checkout's src/ first on sys.path)
from itertools import islice

from flowprobe.analysis.gradients import gradient_table
from flowprobe.data import Batches
from flowprobe.logs import start_job
from flowprobe.workflow import load_trained, run_data

sm = snakemake  # noqa: F821
start_job(sm)
p = sm.params
model, _ = load_trained(sm.input.model, p.device)
data = run_data(p.run, p.data_root, p.download)
device = next(model.parameters()).device
batches = Batches(data.train, batch_size=p.gradients["batch_size"], mean=data.mean, std=data.std,
                  shuffle=True, seed=p.seed, device=device)
batches = islice(batches, p.gradients["max_batches"]) if p.gradients["max_batches"] else batches
gradient_table(model, batches).to_csv(sm.output.csv, index=False)
