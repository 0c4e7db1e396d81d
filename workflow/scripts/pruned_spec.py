"""The model an observed prune trains, from its full run's probes (see workflow/rules/sweep.smk)."""
import _checkout  # noqa: F401,I001  (this checkout's src/ first on sys.path)
import json

from flowprobe.logs import start_job
from flowprobe.prune import observed_pruned_spec

sm = snakemake  # noqa: F821
log = start_job(sm)
spec = observed_pruned_spec(list(sm.input.probes), sm.params.full, sm.params.verdicts)
log.info("%s: %s %s; %s", sm.wildcards.run, spec["model"], spec["model_options"], spec["note"])
with open(sm.output.json, "w") as fh:
    json.dump(spec, fh, indent=2)
    fh.write("\n")
