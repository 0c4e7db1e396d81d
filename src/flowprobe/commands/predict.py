"""`flowprobe predict SPEC --resolution R`: unproductive layers and feasible resolutions, no training."""

from __future__ import annotations

import argparse

import pandas as pd
import yaml

from flowprobe.errors import ConfigError
from flowprobe.predict import border_layers, predict_layers, resolution_interval

NAME = "predict"
HELP = ("receptive field of every probe point per pathway, the layers the border-layer rule predicts "
        "unproductive at a resolution, and the resolutions at which none is")
SHOWN = ["probe_point", "pathway", "kind", "receptive_field", "input_receptive_field",
         "receptive_field_min", "input_receptive_field_min", "unproductive", "border_layer"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="model spec, e.g. VGG16, ResNet18 or 'MPNet2(1:3x3, 4:7x7)'")
    parser.add_argument("--resolution", "-r", type=int, required=True, help="input side length in pixels")
    parser.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                        help="model option as YAML, repeatable, e.g. -o 'widths=[8,16,32,64]' -o stem=imagenet")
    parser.add_argument("--channels", type=int, default=3, help="input channels (default 3)")
    parser.add_argument("--csv", metavar="PATH", help="write the per-layer table (with its pathway's interval) here")


def parse_options(pairs: list[str]) -> dict:
    """{'key': value} from 'key=value' strings, values read as YAML (numbers, lists, strings)."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--option {pair!r}: write it as KEY=VALUE, e.g. -o 'widths=[8,16,32,64]'")
        options[key.strip()] = yaml.safe_load(value)
    return options


def run(args: argparse.Namespace) -> int:
    layers = predict_layers(args.spec, args.resolution, parse_options(args.option), in_channels=args.channels)
    interval = resolution_interval(layers)
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.max_columns", 20):
        print(layers[SHOWN].to_string(index=False))
    borders = border_layers(layers)
    print(f"\n{args.spec} at {args.resolution} px: "
          + (", ".join(f"border layer {p}: {name}" for p, name in borders.items()) or "no unproductive layer"))
    unproductive = layers.loc[layers["unproductive"], "probe_point"].tolist()
    print(f"predicted unproductive ({len(unproductive)}): {', '.join(unproductive) or '-'}")
    whole = interval[interval["pathway"] == "all"].iloc[0]
    if pd.isna(whole["min_resolution"]):
        print("no layer expands the receptive field: every resolution is free of unproductive layers")
    else:
        print(f"no unproductive layer for {whole['min_resolution']} <= resolution <= {whole['max_resolution']} px "
              f"(smallest fields over all paths: {whole['min_resolution_min']} .. {whole['max_resolution_min']})")
    if args.csv:
        layers.merge(interval, on="pathway", how="left").to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0
