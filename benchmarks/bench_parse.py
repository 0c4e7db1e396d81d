"""Parse time of the paper config: what `snakemake -n` spends in flowprobe before scheduling.

Rows (one run, fastest of --repeats after a warm-up import):
- import: `import flowprobe.config` plus torch (paid once per Snakemake process);
- load_config, models checked: the main process's parse (every run's model built once on the meta
  device, cached by spec, options, channels and resolution);
- load_config, job process: what a process Snakemake starts per job (e.g. on Slurm) pays
  (schema and defaults only: the parse that scheduled the job already checked the models);
- previous check: the check before this benchmark existed (two meta builds and two meta forward
  passes per run), for comparison;
- with --dry-run: the wall time of a whole `snakemake -n` of config.yaml (Snakemake's own work included).

    python benchmarks/bench_parse.py [--repeats 3] [--dry-run]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, repeats: int) -> float:
    """Fastest wall time of `repeats` calls (seconds)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def previous_check(config: dict) -> None:
    """The model check load_config made before: build + forward at 256 px, then at the run's size."""
    import torch

    from flowprobe.models import build_model

    for run in config["runs"].values():
        channels = run["channels"] or (1 if run["dataset"] == "mnist" else 3)
        for size in (max(run["resolution"], 256), run["resolution"]):
            with torch.device("meta"):
                model = build_model(run["model"], 10, in_channels=channels, input_size=size, **run["model_options"])
                model(torch.zeros(2, channels, size, size))


def dry_run() -> float:
    with tempfile.TemporaryDirectory() as work:
        start = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "snakemake"), "-s", str(ROOT / "Snakefile"), "-d", work,
                        "-n", "--cores", "1", "--quiet"], check=True, capture_output=True)
        return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dry-run", action="store_true", help="also time a whole `snakemake -n` of config.yaml")
    args = p.parse_args()

    start = time.perf_counter()
    import torch

    import flowprobe.config as cfg
    import flowprobe.models  # noqa: F401  (the builders, imported by the first check)

    imported = time.perf_counter() - start
    torch.set_num_threads(1)
    raw = cfg.yaml.safe_load((ROOT / "config.yaml").read_text())
    start = time.perf_counter()
    config = cfg.load_config(raw)
    cold = time.perf_counter() - start
    rows = [
        ("import flowprobe.config + torch", imported),
        ("load_config, models checked (first call)", cold),
        ("load_config, models checked (cached models)", timed(lambda: cfg.load_config(raw), args.repeats)),
        ("load_config, job process (check_models=False)", timed(lambda: cfg.load_config(raw, check_models=False), args.repeats)),
        ("previous check (2 meta builds + 2 meta forwards per run)", timed(lambda: previous_check(config), args.repeats)),
    ]
    if args.dry_run:
        rows.append(("snakemake -n config.yaml, whole process", dry_run()))
    print(f"config.yaml: {len(config['runs'])} runs, {len(config['figures'])} figures; torch threads 1; "
          f"fastest of {args.repeats}")
    print("| step | seconds |\n|---|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
