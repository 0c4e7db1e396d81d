"""Peak memory of the probe stage vs the largest single layer matrix (goal: ≤ 2×).

Runs `probe_table` on an activations.h5 in a fresh process and reports the growth of its
peak resident memory over the same process's footprint just before the stage started,
next to the size of the largest layer (train + test features, float32). The stage runs
with the config's probe defaults (l2 grid on a subsample, refit, bootstrap interval).
Usage: .venv/bin/python benchmarks/bench_probe_memory.py [--h5 PATH]
(default: a synthetic file with the layer widths of a VGG16 at widths 64..512).
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, resource, sys
from flowprobe.analysis.probes import probe_table
import torch, numpy, sklearn  # the stage's imports, paid before the baseline
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
probe_table(sys.argv[1], progress=False, device="cpu")  # the config's probe defaults
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kib": before, "after_kib": after}))
"""


def synthetic(path: Path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from h5fixtures import write_activations

    layers = [(f"conv{i}", "trunk", i // 3, -1, i, (c, 4, 4)) for i, c in enumerate([64, 128, 256, 512, 512])]
    write_activations(path, 5000, 1000, layers, num_classes=10)


def largest_layer_bytes(path: Path) -> tuple[str, int]:
    with h5py.File(path) as h5:
        sizes = {name: sum(h5[f"layers/{name}/{s}"].size * 4 for s in ("train", "test")) for name in h5["layers"]}
    name = max(sizes, key=sizes.get)
    return name, sizes[name]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--h5", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.h5 or Path(tmp) / "synthetic.h5"
        if args.h5 is None:
            synthetic(path)
        proc = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True)
        rss = json.loads(proc.stdout.strip().splitlines()[-1])
        name, layer = largest_layer_bytes(path)
    growth = (rss["after_kib"] - rss["before_kib"]) * 1024
    print(f"file: {'synthetic (5000 train / 1000 test, widths 64..512)' if args.h5 is None else args.h5}\n")
    print("| quantity | MiB |")
    print("|---|---|")
    print(f"| largest layer matrix ({name}, train+test, float32) | {layer / 2**20:.1f} |")
    print(f"| peak RSS growth of the probe stage | {growth / 2**20:.1f} |")
    print(f"\nratio = {growth / layer:.2f}× (goal ≤ 2×)")


if __name__ == "__main__":
    main()
