"""Glue between the Snakemake scripts and the library: data and model of a run (job logs:
flowprobe.logs.start_job).

Scripts stay thin: they read `snakemake.params`, call one function here or in an analysis
module, and write `snakemake.output`. Every value comes from `params` (never from
`snakemake.config`), so Snakemake reruns exactly the jobs whose settings changed.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn

from flowprobe.data import Dataset, load_dataset
from flowprobe.errors import FlowprobeError
from flowprobe.models import build_model
from flowprobe.devices import resolve_device


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
        max_images=run.get("max_images"),
    )


def run_from_pruned_spec(run: dict, spec_path: str | Path) -> tuple[dict, str]:
    """The run an observed-pruned sibling trains: its config entry with the model of its
    pruned_spec.json (flowprobe.prune.observed_pruned_spec) and a `pruned` record {run, from,
    removed}, which model.pt keeps; and one log line saying what is trained.

    Args:
        run: the sibling's run settings (params), whose model is the full run's (the spec is
            known only once the full run's probes exist).
        spec_path: results/runs/{run}_pruned/pruned_spec.json.

    Raises:
        FlowprobeError: the spec was derived from another full model or resolution than the
            run's (a stale file Snakemake did not rebuild).
    """
    spec = json.loads(Path(spec_path).read_text())
    derived = (spec["full_model"], spec["full_model_options"], spec["resolution"])
    if derived != (run["model"], run["model_options"], run["resolution"]):
        raise FlowprobeError(f"{spec_path} was derived from {derived}, not from this run's "
                             f"{(run['model'], run['model_options'], run['resolution'])}; delete it and rerun")
    out = copy.deepcopy(run)
    out.update(model=spec["model"], model_options=spec["model_options"],
               pruned={"run": spec["run"], "from": spec["from"], "removed": spec["removed"]})
    if spec["pruned"]:
        line = f"observed prune of {spec['run']}: training {spec['model']} {spec['model_options']} ({spec['note']})"
    else:
        line = f"observed prune of {spec['run']}: {spec['note']}"
    return out, line


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
