"""Saturation of a trained run from both sources: the study's (conv output before BN,
nearest-neighbour 4×4) and the probed maps (post-ReLU, average-pooled 4×4).

Dumps the run's model (model.pt of a finished run) with pre-BN maps on a class-balanced
subset of its dataset and prints one Markdown table, one row per probe point.
Usage: .venv/bin/python benchmarks/saturation_sources.py --model results/runs/vgg16/seed0/model.pt
    --dataset imagefolder --root /path/to/images [--per-class 500]
"""
import argparse
import tempfile
from pathlib import Path

import torch

from flowprobe.activations import dump_activations
from flowprobe.analysis.saturation import saturation_table
from flowprobe.data import load_dataset
from flowprobe.workflow import load_trained


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model.pt of a trained run")
    ap.add_argument("--dataset", default="imagefolder")
    ap.add_argument("--root", default="data")
    ap.add_argument("--per-class", type=int, default=500, help="images per class and split")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, record = load_trained(args.model, "cpu")
    data = load_dataset(args.dataset, root=args.root, resolution=record["input_size"],
                        max_per_class=args.per_class)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.h5"
        dump_activations(model, data, path, attrs={"seed": 0, "resolution": record["input_size"], "test_accuracy": 0.0},
                         dtype="float16", prebn=True, device="cpu", progress=False)
        pre = saturation_table(path, source="prebn_nearest4")
        post = saturation_table(path, source="postrelu_avgpool4")
    print(f"{args.model}: {record['run']['model']}, train split, {len(data.train.labels)} images, delta 0.99, "
          "textbook k\n")
    print("| probe point | pre-BN nearest 4×4 (study) | post-ReLU avgpool 4×4 | difference |")
    print("|---|---:|---:|---:|")
    for a, b in zip(pre.itertuples(), post.itertuples()):
        note = "" if a.source == "prebn_nearest4" else " (no pre-BN output: post-ReLU)"
        print(f"| {a.probe_point}{note} | {a.saturation:.3f} | {b.saturation:.3f} | {a.saturation - b.saturation:+.3f} |")


if __name__ == "__main__":
    main()
