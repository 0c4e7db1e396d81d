"""The `flowprobe` console command: one subcommand per module of `flowprobe.commands`.

Each module of `COMMANDS` defines `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from flowprobe.errors import FlowprobeError

# Subcommand modules under flowprobe.commands, in the order `flowprobe --help` lists them.
COMMANDS: list[str] = ["points", "predict", "disk"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowprobe", description="flowprobe: information flow in CNNs")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"flowprobe.commands.{name}")
        sub = subparsers.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except FlowprobeError as err:
        print(f"flowprobe: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
