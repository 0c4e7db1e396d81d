# Config validation, paths and every input/param function of the workflow.
import os
import sys
from pathlib import Path

# The library lives in this checkout; make it importable even without `pip install -e .`.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

import yaml

from flowprobe.config import deep_merge, load_config
from flowprobe.errors import ConfigError
from flowprobe.tables import FIGURE_INPUTS

if "runs" not in config:  # no --configfile: the paper's config, with any --config overrides on top
    config = deep_merge(yaml.safe_load((Path(workflow.basedir) / "config.yaml").read_text()), config)

try:
    config = load_config(config)
except ConfigError as err:
    # One clear line before any job is scheduled; nothing computed is touched.
    sys.stderr.write(f"flowprobe: {err}\n")
    sys.exit(1)

# Jobs import flowprobe from this checkout, whatever environment runs them (venv, conda, Slurm).
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in [str(Path(workflow.basedir) / "src"), os.environ.get("PYTHONPATH", "")] if p
)

RUN_DIR = "results/runs/{run}/seed{seed}"
ENV = "../../envs/flowprobe.yaml"

wildcard_constraints:
    run="[A-Za-z0-9_.-]+",
    seed=r"\d+",
    figure="[A-Za-z0-9_-]+",


def run_cfg(wildcards):
    return config["runs"][wildcards.run]


def run_file(name):
    return f"{RUN_DIR}/{name}"


def log_file(stage):
    return f"results/logs/{stage}/{{run}}_seed{{seed}}.log"


def bench_file(stage):
    return f"results/benchmarks/{stage}/{{run}}_seed{{seed}}.tsv"


def data_params(wildcards):
    """What identifies a run's data: dataset, resolution, channels, subset, roots."""
    run = run_cfg(wildcards)
    keys = ("model", "model_options", "dataset", "dataset_variant", "dataset_root", "resolution", "channels", "max_per_class")
    return {k: run[k] for k in keys}


def members(runs, names):
    """One entry per run × seed: its label and the files it contributes."""
    return [
        {
            "run": run,
            "seed": seed,
            "model": config["runs"][run]["model"],
            "resolution": config["runs"][run]["resolution"],
            "files": {n: run_file(n).format(run=run, seed=seed) for n in names},
        }
        for run in runs
        for seed in config["runs"][run]["seeds"]
    ]


def figure_members(wildcards):
    fig = config["figures"][wildcards.figure]
    return members(fig["runs"], ["train_log.csv", *FIGURE_INPUTS[fig["kind"]]])


def verdict_members(wildcards):
    return members(list(config["runs"]), ["train_log.csv", "probes.csv"])


def verdict_inputs(wildcards):
    return [path for member in verdict_members(wildcards) for path in member["files"].values()]


def figure_inputs(wildcards):
    return [path for member in figure_members(wildcards) for path in member["files"].values()]


def all_targets():
    """Every figure of the config and the verdict table."""
    return [f"results/figures/{name}.pdf" for name in config["figures"]] + [
        "results/tables/verdicts.csv", "results/tables/prediction_quality.csv"]


# Resolution sweeps and pruned retrains (workflow/rules/sweep.smk).
def run_resolutions(wildcards=None):
    """{run: input resolution} of every run (prediction_quality groups by it)."""
    return {name: run["resolution"] for name, run in config["runs"].items()}


def run_pruned(wildcards):
    """The `pruned` record ({run, from, removed}) of a pruned retrain, None for a full run."""
    return run_cfg(wildcards).get("pruned")
