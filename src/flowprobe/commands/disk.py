"""`flowprobe disk [CONFIG]`: parameters, activation bytes per image and the estimated
activations.h5 size of every run of a config, as a Markdown table (flowprobe.disk)."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from flowprobe.config import load_config
from flowprobe.disk import disk_table, settings_line
from flowprobe.errors import ConfigError

NAME = "disk"
HELP = "estimate each run's activations.h5 size (parameters, bytes per image, GiB) before running"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", default="config.yaml", help="workflow config (default: config.yaml)")


def run(args: argparse.Namespace) -> int:
    path = Path(args.config)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file; give the path of a workflow config such as config.yaml")
    config = load_config(yaml.safe_load(path.read_text()))
    print(markdown(disk_table(config), f"{path}: {settings_line(config)}"))
    return 0


def markdown(table, caption: str) -> str:
    """The disk table as Markdown, with a total row."""
    lines = [
        caption,
        "",
        "| run | model | dataset | parameters | bytes/image | images | seeds | estimated GiB |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in table.itertuples():
        le = "≤ " if r.upper_bound else ""
        lines.append(
            f"| {r.run} | {le}{r.model} | {r.dataset} {r.resolution}px | {le}{r.parameters:,} | "
            f"{le}{r.bytes_per_image:,} | {r.images:,} | {r.seeds} | {le}{r.gib:.2f} |"
        )
    lines.append(f"| **total** | | | | | | | **{table['gib'].sum():.1f}** |")
    if table["upper_bound"].any():
        lines += ["", "≤: the sibling of a `prune: {from: observed}` run, estimated with the full run's model "
                      "(its architecture is decided by the full run's probes)."]
    return "\n".join(lines)
