"""Dump activations.h5 of one trained run × seed (see workflow/rules/activations.smk)."""
import _checkout  # noqa: F401,I001  (this checkout's src/ first on sys.path)
from flowprobe.activations import dump_activations
from flowprobe.logs import start_job
from flowprobe.workflow import load_trained, run_data

sm = snakemake  # noqa: F821
log = start_job(sm)
p = sm.params
model, record = load_trained(sm.input.model, p.device)
data = run_data(p.run, p.data_root, p.download, max_per_class=p.activations["max_per_class"])
attrs = {
    "config": record["run"],
    "run": sm.wildcards.run,
    "seed": p.seed,
    "resolution": p.run["resolution"],
    "test_accuracy": float(record["summary"]["test_accuracy"]),
    "diverged": bool(record["summary"]["diverged"]),
}
a = p.activations
dump_activations(
    model, data, sm.output.h5, attrs=attrs, reduction=a["reduction"], dtype=a["dtype"], prebn=a["prebn"],
    compression=a["compression"], batch_size=a["batch_size"], device=p.device,
)
log.info("wrote %s", sm.output.h5)
