"""Activation dump vs a bare forward pass over the same images (goal: dump ≤ 1.5× the forward).

Both run the same model in eval mode over the same cifar10-mini images in the same batches;
the dump additionally pools every probe point to 4×4 and writes it to HDF5 (with --prebn also
the pre-BN unit outputs, nearest-neighbour 4×4; --dtype float16 halves the matrices).
Prints one Markdown table.  Usage: .venv/bin/python benchmarks/bench_dump.py [--model SPEC] [--repeats 3]
    [--dtype float16] [--prebn] [--compression lzf]
"""
import argparse
import tempfile
import time
from pathlib import Path

import torch

from flowprobe.activations import dump_activations
from flowprobe.data import Batches, load_dataset
from flowprobe.models import build_model, probe_points


def bare_forward(model, data, batch_size):
    with torch.no_grad():
        for split in (data.train, data.test):
            for x, _ in Batches(split, batch_size=batch_size, mean=data.mean, std=data.std):
                model(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="VGG16")
    ap.add_argument("--widths", default="32,64,128,256,256")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    ap.add_argument("--prebn", action="store_true", help="also store the pre-BN maps")
    ap.add_argument("--compression", choices=["gzip", "lzf"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("cifar10-mini")
    torch.manual_seed(0)
    model = build_model(args.model, 10, widths=tuple(int(w) for w in args.widths.split(","))).eval()
    n = len(data.train) + len(data.test)
    forward, dump = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):  # interleaved rounds, fastest kept
            t = time.perf_counter()
            bare_forward(model, data, args.batch_size)
            forward.append(time.perf_counter() - t)
            t = time.perf_counter()
            dump_activations(model, data, Path(tmp) / "a.h5", attrs={"seed": 0, "resolution": 32, "test_accuracy": 0.0},
                             batch_size=args.batch_size, device="cpu", progress=False, dtype=args.dtype,
                             prebn=args.prebn, compression=args.compression)
            dump.append(time.perf_counter() - t)
        size = (Path(tmp) / "a.h5").stat().st_size
    f, d = min(forward), min(dump)
    print(f"{args.model} widths {args.widths}, {len(probe_points(model))} probe points, {n} images, "
          f"batch {args.batch_size}, {args.threads} torch threads, fastest of {args.repeats}; {args.dtype}, "
          f"pre-BN maps {'stored' if args.prebn else 'not stored'}, compression {args.compression}\n")
    print("| pass | time (s) | images/s | output |")
    print("|---|---|---|---|")
    print(f"| bare forward (eval, no hooks) | {f:.2f} | {n / f:.0f} | – |")
    print(f"| activation dump (hooks, 4×4 pool, HDF5) | {d:.2f} | {n / d:.0f} | {size / 2**20:.0f} MiB |")
    print(f"\ndump / forward = {d / f:.2f}× (goal ≤ 1.5×)")


if __name__ == "__main__":
    main()
