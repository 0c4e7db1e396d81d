"""Accuracy with every bypassable unit removed, optionally fine-tuned; non-dominant summary row (see workflow/rules/analysis.smk)."""
import _checkout  # noqa: F401,I001  (this checkout's src/ first on sys.path)
from flowprobe.analysis.ablation import FineTune, ablation_table
from flowprobe.data import Batches
from flowprobe.logs import start_job
from flowprobe.workflow import load_trained, run_data

sm = snakemake  # noqa: F821
log = start_job(sm)
p = sm.params
model, _ = load_trained(sm.input.model, p.device)
data = run_data(p.run, p.data_root, p.download)
device = next(model.parameters()).device


test_images = data.test.sample(p.ablation["max_images"], seed=0)
log.info("ablations evaluated on %d of the %d test images%s", len(test_images), len(data.test),
         " (ablation.max_images)" if len(test_images) < len(data.test) else "")


def test_batches():
    return Batches(test_images, batch_size=512, mean=data.mean, std=data.std, device=device)


def train_batches():
    return Batches(data.train, batch_size=64, mean=data.mean, std=data.std, shuffle=True, augment=True,
                   seed=p.seed, device=device)


finetune = None
if p.ablation["finetune_epochs"] > 0:
    finetune = FineTune(train_batches, epochs=p.ablation["finetune_epochs"], lr=p.ablation["finetune_lr"])
table = ablation_table(model, test_batches, finetune=finetune, depth_ratio=p.depth_ratio)
table.to_csv(sm.output.csv, index=False)
