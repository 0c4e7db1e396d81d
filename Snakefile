# flowprobe: train → activations.h5 → probes, saturation, CKA, gradients, ablation → tables → figures.
# Every stage is a cached file; each rule's params hold only the config values it uses.
from snakemake.utils import min_version

min_version("9.0")


# config.yaml is the default; `--configfile config/demo.yaml` replaces it instead of merging
# into it (see workflow/rules/common.smk), so the demo never schedules the paper's runs.
include: "workflow/rules/common.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/activations.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/comparison.smk"
include: "workflow/rules/sweep.smk"


rule all:
    default_target: True
    input:
        all_targets(),
