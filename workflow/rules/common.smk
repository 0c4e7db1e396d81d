# Config validation, paths and every input/param function of the workflow.
import re
import sys
from pathlib import Path

# The library lives in this checkout; the parse imports it from here, as the jobs do.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

import yaml

from flowprobe.config import DEFAULTS, deep_merge, load_config
from flowprobe.errors import ConfigError
from flowprobe.figures import KINDS
from flowprobe.fingerprint import canonical_config
from flowprobe.sweep import in_channels, is_observed_prune
from flowprobe.tables import PRUNED_SPEC as PRUNED_SPEC_NAME

if (
    "runs" not in config
):  # no --configfile: the paper's config, with any --config overrides on top
    config = deep_merge(
        yaml.safe_load((Path(workflow.basedir) / "config.yaml").read_text()), config
    )

try:
    # Canonical (keys sorted, 0 spelled 0.0 where the default is a float): Snakemake compares
    # params by repr, so key order or an explicit default must not look like a new setting.
    config = canonical_config(
        load_config(config, check_models=workflow.is_main_process), DEFAULTS
    )
except ConfigError as err:
    # One clear line before any job is scheduled; nothing computed is touched.
    sys.stderr.write(f"flowprobe: {err}\n")
    sys.exit(1)

if (
    workflow.is_main_process
):  # once per invocation (dry runs too), not in every job's process
    from flowprobe.disk import startup_report

    sys.stderr.write(startup_report(config))

# Jobs import flowprobe from this checkout too, whatever environment runs them (venv, conda,
# Slurm): every script starts with `import _checkout` (workflow/scripts/_checkout.py).

RUN_DIR = "results/runs/{run}/seed{seed}"
# The model an observed prune trains, written by the pruned_spec rule: one per run, beside its seeds.
PRUNED_SPEC = f"results/runs/{{run}}/{PRUNED_SPEC_NAME}"
ENV = "../../envs/flowprobe.yaml"
# The table and figure rules need no torch: a small environment (scripts/sync_envs.py).
ENV_TABLES = "../../envs/tables.yaml"


wildcard_constraints:
    run="[A-Za-z0-9_.-]+",
    seed=r"\d+",
    # Exactly the config's figure names: results/tables/verdicts.csv (and any other table a rule of
    # its own writes) then maps to that rule alone, never also to `table`.
    figure="|".join(re.escape(name) for name in config["figures"]) or "(?!)",


def run_cfg(wildcards):
    return config["runs"][wildcards.run]


def run_file(name):
    return f"{RUN_DIR}/{name}"


def log_file(stage):
    return f"results/logs/{stage}/{{run}}_seed{{seed}}.log"


def bench_file(stage):
    return f"results/benchmarks/{stage}/{{run}}_seed{{seed}}.tsv"


def imported_runs():
    """Runs that name a `checkpoint:`: their model.pt is imported, not trained."""
    return [name for name, run in config["runs"].items() if run.get("checkpoint")]


def runs_pattern(imported):
    """Wildcard pattern of the run names import_checkpoint (imported=True) or train makes."""
    names = [re.escape(name) for name in imported_runs()]
    if imported:
        return (
            "|".join(names) or "(?!)"
        )  # (?!) matches nothing: no run imports a checkpoint
    # not an imported name followed by a character that cannot be part of a run name
    return (
        f"(?!(?:{'|'.join(names)})(?![A-Za-z0-9_.-]))[A-Za-z0-9_.-]+"
        if names
        else "[A-Za-z0-9_.-]+"
    )


def run_checkpoint(wildcards):
    return run_cfg(wildcards)["checkpoint"]


def data_params(wildcards):
    """What identifies a run's data: dataset, resolution, channels, subset, roots."""
    run = run_cfg(wildcards)
    keys = (
        "model",
        "model_options",
        "dataset",
        "dataset_variant",
        "dataset_root",
        "resolution",
        "channels",
        "max_per_class",
        "max_images",
    )
    return {k: run[k] for k in keys}


def train_params(wildcards):
    """Every train setting of a run (defaults filled in by load_config)."""
    return run_cfg(wildcards)["train"]


# The stages that run a network (training, dumps, gradients, ablation) or fit torch probes /
# minibatch CKA hold one GPU each: every such rule spreads GPU_JOB into its resources, and that
# is the one list of GPU stages. A Slurm executor turns it into `--gpus=1` (or gres); locally it
# is unlimited unless `--resources gpu=N` (profiles/local) caps the jobs per GPU. On a cluster
# without GPUs: `--set-resources train:gpu=0 ...` or a site profile (docs/cluster.md).
GPU_JOB = dict(gpu=1)


def seed_of(wildcards):
    """The seed of a run × seed job, as an integer."""
    return int(wildcards.seed)


# What every job that loads a run's data gets: the run's data/model settings, its seed, where
# the data lives and the device. Defined once, spread into the rules' params (`**RUN_DATA`).
RUN_DATA = dict(
    run=data_params,
    seed=seed_of,
    data_root=config["data_root"],
    download=config["download"],
    device=config["device"],
)


def activations_h5():
    """activations.h5 of a run; a temp() file (deleted once all its readers ran) when
    keep_activations is false."""
    path = run_file("activations.h5")
    return path if config["keep_activations"] else temp(path)


def activations_params(wildcards):
    """The dump's settings; pre-BN maps are stored when saturation reads them."""
    return {
        **config["activations"],
        "prebn": config["saturation"]["source"] == "prebn_nearest4",
    }


def member_files(run, seed, names):
    """{file name: path} of one run × seed; an observed prune adds its pruned_spec.json, which
    names the model it was trained as (flowprobe.tables reads the `model` label from it).
    """
    files = {n: run_file(n).format(run=run, seed=seed) for n in names}
    if is_observed_prune(config["runs"][run]):
        files[PRUNED_SPEC_NAME] = PRUNED_SPEC.format(run=run)
    return files


def member_model(run):
    """The model label of a run's table rows; None for an observed prune, whose model is known
    only at job time (from its pruned_spec.json), not from the config."""
    cfg = config["runs"][run]
    return None if is_observed_prune(cfg) else cfg["model"]


def members(runs, names):
    """One entry per run × seed: its label and the files it contributes."""
    return [
        {
            "run": run,
            "seed": seed,
            "model": member_model(run),
            "resolution": config["runs"][run]["resolution"],
            "files": member_files(run, seed, names),
        }
        for run in runs
        for seed in config["runs"][run]["seeds"]
    ]


def figure_members(wildcards):
    fig = config["figures"][wildcards.figure]
    return members(fig["runs"], ["train_log.csv", *KINDS[fig["kind"]].inputs])


def figure_kind_name(wildcards):
    return config["figures"][wildcards.figure]["kind"]


def figure_title(wildcards):
    return config["figures"][wildcards.figure].get("title", wildcards.figure)


def figure_caption(wildcards):
    """The report caption of the figure's kind (flowprobe.figures.KINDS)."""
    return KINDS[figure_kind_name(wildcards)].caption


def verdict_members(wildcards):
    return members(list(config["runs"]), ["train_log.csv", "probes.csv"])


def member_inputs(members):
    """Every file of `members`, each once (an observed prune's pruned_spec.json is every seed's)."""
    return list(
        dict.fromkeys(path for member in members for path in member["files"].values())
    )


def verdict_inputs(wildcards):
    return member_inputs(verdict_members(wildcards))


def figure_inputs(wildcards):
    return member_inputs(figure_members(wildcards))


def all_targets():
    """Every figure of the config, the verdict table, the comparison with the paper and the
    prediction quality."""
    tables = [
        "results/tables/verdicts.csv",
        "results/tables/paper_comparison.csv",
        "results/tables/prediction_quality.csv",
    ]
    return [f"results/figures/{name}.pdf" for name in config["figures"]] + tables


from flowprobe.paper import claims_for, files_needed


def comparison_members(wildcards):
    """Every run × seed the paper has a value or claim for, with the files its claims are read from."""
    return [
        member
        for run, cfg in config["runs"].items()
        if claims_for(cfg)
        for member in members([run], files_needed(claims_for(cfg)))
    ]


def comparison_inputs(wildcards):
    return [
        "results/tables/verdicts.csv",
        *member_inputs(comparison_members(wildcards)),
    ]


# Resolution sweeps and pruned retrains (workflow/rules/sweep.smk).
def run_resolutions(wildcards=None):
    """{run: input resolution} of every run (prediction_quality groups by it)."""
    return {name: run["resolution"] for name, run in config["runs"].items()}


def run_pruned(wildcards):
    """The `pruned` record ({run, from, removed}) of a pruned retrain, None for a full run (an
    observed prune's record has no `removed`: cost.py reads it from model.pt)."""
    return run_cfg(wildcards).get("pruned")


# `prune: {from: observed}`: the sibling's architecture is a DAG stage. Rule pruned_spec
# (workflow/rules/sweep.smk) derives it from the full run's probes.csv of every seed; the
# sibling's train job reads it; everything after training reads the model from model.pt.
def observed_prune_runs():
    """The `{run}_pruned` siblings of runs with `prune: {from: observed}`."""
    return [name for name, run in config["runs"].items() if is_observed_prune(run)]


def observed_prune_pattern():
    """Wildcard pattern of exactly the observed-prune siblings ((?!) matches nothing)."""
    return "|".join(re.escape(name) for name in observed_prune_runs()) or "(?!)"


def train_inputs(wildcards):
    """The pruned_spec.json an observed prune trains from; nothing for every other run."""
    if is_observed_prune(run_cfg(wildcards)):
        return {"pruned_spec": PRUNED_SPEC.format(run=wildcards.run)}
    return {}


def full_run_of(wildcards):
    """The run an observed prune is cut from."""
    return run_cfg(wildcards)["pruned"]["run"]


def pruned_spec_probes(wildcards):
    """probes.csv of every seed of the full run."""
    full = full_run_of(wildcards)
    return [
        run_file("probes.csv").format(run=full, seed=seed)
        for seed in config["runs"][full]["seeds"]
    ]


def pruned_spec_full(wildcards):
    """What the pruned spec is derived from besides the probes: the full run's name, model,
    model_options, resolution and input channels."""
    full = full_run_of(wildcards)
    run = config["runs"][full]
    return {
        "run": full,
        "model": run["model"],
        "model_options": run["model_options"],
        "resolution": run["resolution"],
        "in_channels": in_channels(run),
    }
