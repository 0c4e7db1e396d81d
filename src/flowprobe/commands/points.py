"""`flowprobe points SPEC`: the probe points of any model spec, before anything runs.

One row per probe point in forward order: stage, block, pathway, position, kind, output
shape, receptive field (largest and smallest over all paths), jump and the border-layer flags
at the given resolution. Works for zoo specs (VGG16, MPNet2(...)), torchvision:NAME and
import:package.module:factory alike.
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch
import yaml

from flowprobe.errors import ConfigError
from flowprobe.models import build_model, probe_points, receptive_fields

NAME = "points"
HELP = "print the probe points, pathways and receptive fields of a model spec"
COLUMNS = ["probe_point", "stage", "block", "pathway", "position", "kind", "shape", "receptive_field",
           "receptive_field_min", "jump", "border_layer", "border_layer_max"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="model spec: VGG16, 'MPNet2(1:3x3,4:7x7)', torchvision:resnet18, "
                                     "import:package.module:factory")
    parser.add_argument("--resolution", type=int, default=32, help="input side in pixels (default 32)")
    parser.add_argument("--classes", type=int, default=10, help="number of classes (default 10)")
    parser.add_argument("--channels", type=int, default=3, help="input channels (default 3)")
    parser.add_argument("--options", default="{}", help="model_options as YAML, e.g. '{widths: [8, 16, 32, 64]}'")


def points_table(spec: str, resolution: int = 32, classes: int = 10, channels: int = 3, **options) -> pd.DataFrame:
    """The probe points of `spec` built at `resolution` (random weights), one row each.

    Returns:
        DataFrame with COLUMNS; `shape` is the point's output shape (C, H, W) or (D,).
    """
    torch.manual_seed(0)
    model = build_model(spec, classes, in_channels=channels, input_size=resolution, **options)
    table = receptive_fields(model, resolution)
    shapes = {p.name: "x".join(map(str, p.shape)) for p in probe_points(model)}
    table["shape"] = table["probe_point"].map(shapes)
    return table[COLUMNS]


def run(args: argparse.Namespace) -> int:
    options = yaml.safe_load(args.options) or {}
    if not isinstance(options, dict):
        raise ConfigError(f"--options {args.options!r} is not a YAML mapping; write e.g. '{{widths: [8, 16]}}'")
    torch.set_num_threads(min(torch.get_num_threads(), 4))
    table = points_table(args.spec, args.resolution, args.classes, args.channels, **options)
    print(table.to_string(index=False))
    blocks = table[table.pathway != "trunk"].groupby(["stage", "block"]).pathway.unique()
    print(f"\n{len(table)} probe points, {len(blocks)} multi-path blocks; border layers at {args.resolution} px: "
          f"{', '.join(table.probe_point[table.border_layer]) or 'none'}")
    return 0
