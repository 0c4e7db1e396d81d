"""model.pt and train_log.csv of a run from its checkpoint (see workflow/rules/train.smk)."""
import _checkout  # noqa: F401,I001  (this checkout's src/ first on sys.path)
from flowprobe.imported import import_checkpoint
from flowprobe.logs import start_job
from flowprobe.workflow import run_data

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = start_job(sm)
p = sm.params
data = run_data(p.run, p.data_root, p.download)
accuracy = import_checkpoint(sm.input.checkpoint, p.run, data, p.seed, sm.output.model, sm.output.train_log,
                             device=p.device)
log.info("run %s seed %d: %s from %s, test accuracy %.4f", sm.wildcards.run, p.seed, p.run["model"],
         sm.input.checkpoint, accuracy)
