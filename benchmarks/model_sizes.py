"""Size of each model of a config at its real widths and resolution, on the meta device (no memory).

Prints parameters, forward GFLOP per image (convolutions and linear layers) and the float32
outputs of all leaf modules per image (about what training keeps for the backward pass).
The sibling of a `prune: {from: observed}` run is measured with its full model (marked ≤, an
upper bound): its cut is decided by the full run's probes.

    python benchmarks/model_sizes.py [config.yaml]
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import yaml

from flowprobe.config import load_config
from flowprobe.models import build_model
from flowprobe.sweep import is_observed_prune

ROOT = Path(__file__).resolve().parents[1]


def measure(run: dict) -> tuple[int, float, float]:
    """(parameters, forward FLOP per image, leaf-module output bytes per image) of one run's model."""
    channels = run["channels"] or (1 if run["dataset"] == "mnist" else 3)
    size, totals = run["resolution"], {"flop": 0, "values": 0}

    def count(module, _inputs, output):
        per_image = output.numel() // output.shape[0]
        if isinstance(module, torch.nn.Conv2d):
            totals["flop"] += 2 * per_image * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, torch.nn.Linear):
            totals["flop"] += 2 * module.in_features * module.out_features
        totals["values"] += per_image

    with torch.device("meta"):
        model = build_model(run["model"], 10, channels, size, **run["model_options"]).eval()
        for module in model.modules():
            if not list(module.children()):
                module.register_forward_hook(count)
        model(torch.zeros(2, channels, size, size))
    return sum(p.numel() for p in model.parameters()), totals["flop"], 4 * totals["values"]


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "config.yaml"
    config = load_config(yaml.safe_load(path.read_text()))
    print("| run | model | px | parameters | forward GFLOP / image | activations / image |\n|---|---|---:|---:|---:|---:|")
    for name, run in config["runs"].items():
        params, flop, size = measure(run)
        le = "≤ " if is_observed_prune(run) else ""
        print(f"| {name} | {le}{run['model']} | {run['resolution']} | {params / 1e6:.1f} M | {flop / 1e9:.2f} | {size / 1e6:,.1f} MB |")


if __name__ == "__main__":
    main()
