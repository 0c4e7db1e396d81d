"""Glue between the Snakemake scripts and the library: logging, data and model of a run.

Scripts stay thin: they read `snakemake.params`, call one function here or in an analysis
module, and write `snakemake.output`. Every value comes from `params` (never from
`snakemake.config`), so Snakemake reruns exactly the jobs whose settings changed.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch
from torch import nn

from flowprobe.data import Dataset, load_dataset
from flowprobe.logs import job_header, previous_attempts
from flowprobe.models import build_model
from flowprobe.train import resolve_device


def setup_logging(log_path: str | Path, threads: int | None = None) -> logging.Logger:
    """Send logging and progress bars (stderr) of this job to its Snakemake log file.

    `threads` (the rule's `threads:`) caps torch's CPU threads so parallel jobs do not
    oversubscribe the cores.
    """
    if threads:
        torch.set_num_threads(threads)
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    stream = open(log_path, "a", buffering=1)
    sys.stderr = stream
    logging.basicConfig(
        stream=stream, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    return logging.getLogger("flowprobe")


def start_job(sm) -> logging.Logger:
    """Start a Snakemake job's log: a header for this attempt, then logging and progress.

    Snakemake deletes a job's log before it reruns the job, so each log usually holds one
    attempt; a log that already holds some (a job run by hand twice) gets a new section.

    Args:
        sm: the `snakemake` object of a script (its rule, wildcards, params, log, threads).

    Returns:
        The "flowprobe" logger.
    """
    attempt = previous_attempts(sm.log[0]) + 1
    logger = setup_logging(sm.log[0], sm.threads)
    sys.stderr.write(job_header(sm.rule, dict(sm.wildcards.items()), dict(sm.params.items()), attempt))
    return logger


def run_data(run: dict, data_root: str, download: bool, max_per_class: int | None = None) -> Dataset:
    """The run's dataset at its resolution and channel count (optionally a balanced subset)."""
    return load_dataset(
        run["dataset"],
        root=run.get("dataset_root") or data_root,
        resolution=run["resolution"],
        channels=run["channels"],
        download=download,
        variant=run.get("dataset_variant"),
        max_per_class=max_per_class or run.get("max_per_class"),
        seed=0,
    )


def new_model(run: dict, data: Dataset, seed: int) -> nn.Module:
    """A freshly initialised model of the run; the seed fixes the initial weights."""
    torch.manual_seed(seed)
    return build_model(
        run["model"],
        len(data.classes),
        in_channels=data.train.images.shape[1],
        input_size=run["resolution"],
        **run["model_options"],
    )


def save_trained(path: str | Path, model: nn.Module, run: dict, seed: int, summary: dict, classes: list) -> None:
    """model.pt: weights plus everything needed to rebuild the model without the config."""
    tmp = Path(str(path) + ".tmp")
    torch.save(
        {
            "state_dict": model.state_dict(),
            "run": run,
            "seed": seed,
            "num_classes": len(classes),
            "in_channels": model.in_channels,
            "input_size": model.input_size,
            "summary": summary,
        },
        tmp,
    )
    tmp.replace(path)


def load_trained(path: str | Path, device: str | None = "auto") -> tuple[nn.Module, dict]:
    """Rebuild the trained model of `model.pt`; returns (model in eval mode, saved record)."""
    record = torch.load(path, map_location="cpu", weights_only=False)
    run = record["run"]
    model = build_model(
        run["model"], record["num_classes"], in_channels=record["in_channels"],
        input_size=record["input_size"], **run["model_options"],
    )
    model.load_state_dict(record["state_dict"])
    return model.to(resolve_device(device)).eval(), record
