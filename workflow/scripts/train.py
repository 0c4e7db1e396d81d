"""Train one run × seed (see workflow/rules/train.smk)."""
import _checkout  # noqa: F401,I001  (this checkout's src/ first on sys.path)
from pathlib import Path

from flowprobe.train import TrainSettings, train_model
from flowprobe.logs import start_job
from flowprobe.workflow import new_model, run_data, run_from_pruned_spec, save_trained

sm = snakemake  # noqa: F821  (injected by Snakemake)
log = start_job(sm)
p = sm.params
run = p.run
if "pruned_spec" in sm.input.keys():  # an observed prune trains the model its pruned_spec.json names
    run, line = run_from_pruned_spec(p.run, sm.input.pruned_spec)
    log.info("%s", line)
out_dir = Path(sm.output.model).parent
data = run_data(run, p.data_root, p.download)
log.info("run %s seed %d: %s on %s (%d train / %d test images)", sm.wildcards.run, p.seed,
         run["model"], data.name, len(data.train.labels), len(data.test.labels))
model = new_model(run, data, p.seed)
partial_log = out_dir / "train_log.partial.csv"
checkpoint = out_dir / "checkpoint.pt"
summary = train_model(
    model, data, TrainSettings(**p.train), seed=p.seed, log_path=partial_log,
    checkpoint_path=checkpoint, device=p.device,
    model_spec={"spec": run["model"], "options": run["model_options"]},
)
log.info("test accuracy %.4f", summary["test_accuracy"])
save_trained(sm.output.model, model, run, p.seed, summary, data.classes)
partial_log.replace(sm.output.train_log)
checkpoint.unlink(missing_ok=True)
