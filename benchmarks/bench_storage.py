"""activations.h5 storage: float16 vs float32 probe accuracy, and chunking/compression
size and speed, measured on a real dump.

Part 1 (--part float16): for each chosen probe point, a probe (flowprobe fit_probe, l2 chosen
on a held-out tenth as the probe stage does) on the stored float32 features and on the same
features cast to float16 and back (what a float16 dump stores and its readers upcast), on a
stratified subsample of train rows and the full test split; prints the test accuracies and
their difference in points.
Part 2 (--part layout): the same probe points' train rows written as the dump writes them
(batches of 250 rows) in each layout (dtype × chunking × filter); prints size, write time,
and the read time of the three access patterns of the analyses: whole matrix (probes),
2048-row slices (saturation, CKA with the output) and random sorted 256-row batches
(minibatch CKA between pathways).

Usage: .venv/bin/python benchmarks/bench_storage.py --h5 results/runs/vgg16/seed0/activations.h5
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from flowprobe.activations import CHUNK_BYTES
from flowprobe.analysis.probes import fit_probe

LAYOUTS = [  # name, dtype, chunked, filter
    ("float32 contiguous (before)", "f4", False, None),
    ("float32 row chunks", "f4", True, None),
    ("float32 row chunks + lzf", "f4", True, "lzf"),
    ("float32 row chunks + gzip-1", "f4", True, "gzip"),
    ("float16 contiguous", "f2", False, None),
    ("float16 row chunks", "f2", True, None),
    ("float16 row chunks + lzf", "f2", True, "lzf"),
    ("float16 row chunks + gzip-1", "f2", True, "gzip"),
]


def stratified_rows(y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    per = n // len(classes)
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), per, replace=False) for c in classes]))


def part_float16(h5, layers, train_rows, grid, max_iter):
    y_train_all, y_test = h5["labels/train"][...], h5["labels/test"][...]
    rows = stratified_rows(y_train_all, train_rows)
    print(f"\n{len(rows)} stratified train rows, {len(y_test)} test rows; l2 grid {grid}, max_iter {max_iter}\n")
    print("| probe point | D | test acc float32 | test acc float16 | Δ (points) | l2 f32 / f16 | max rel. cast error |")
    print("|---|---:|---:|---:|---:|---|---:|")
    deltas = []
    for name in layers:
        x_train = h5[f"layers/{name}/train"][rows]
        x_test = h5[f"layers/{name}/test"][...]
        results = []
        for dtype in (np.float32, np.float16):
            xtr = x_train.astype(dtype).astype(np.float32)
            xte = x_test.astype(dtype).astype(np.float32)
            results.append(fit_probe(xtr, y_train_all[rows], xte, y_test, l2_grid=grid, max_iter=max_iter))
        cast = x_test.astype(np.float16).astype(np.float32)
        rel = np.abs(cast - x_test).max() / max(np.abs(x_test).max(), 1e-30)
        delta = 100 * (results[1].test_acc - results[0].test_acc)
        deltas.append(delta)
        print(f"| {name} | {x_train.shape[1]} | {100 * results[0].test_acc:.2f} | {100 * results[1].test_acc:.2f} | "
              f"{delta:+.2f} | {results[0].l2:g} / {results[1].l2:g} | {rel:.1e} |")
    print(f"\nmax |Δ| = {max(abs(d) for d in deltas):.2f} points over {len(deltas)} probe points")


def write_layout(path, matrices, dtype, chunked, filt, batch=250):
    t = time.perf_counter()
    with h5py.File(path, "w") as out:
        for name, x in matrices.items():
            opts = {}
            if chunked:
                rows = max(1, min(len(x), CHUNK_BYTES // (x.shape[1] * np.dtype(dtype).itemsize)))
                opts["chunks"] = (rows, x.shape[1])
            if filt:
                opts.update(compression=filt, shuffle=True)
                if filt == "gzip":
                    opts["compression_opts"] = 1
            ds = out.create_dataset(name, shape=x.shape, dtype=dtype, **opts)
            for i in range(0, len(x), batch):
                ds[i : i + batch] = x[i : i + batch].astype(dtype)
    return time.perf_counter() - t


def read_patterns(path, names, n_batches=8):
    times = {}
    with h5py.File(path, "r") as h5:
        t = time.perf_counter()
        for name in names:
            h5[name][...].astype(np.float32)
        times["whole"] = time.perf_counter() - t
        t = time.perf_counter()
        for name in names:
            ds = h5[name]
            for i in range(0, ds.shape[0], 2048):
                ds[i : i + 2048].astype(np.float32)
        times["slices"] = time.perf_counter() - t
        rng = np.random.default_rng(0)
        t = time.perf_counter()
        for name in names:
            ds = h5[name]
            order = rng.permutation(ds.shape[0])
            for rows in np.array_split(order, ds.shape[0] // 256)[:n_batches]:
                ds[np.sort(rows)].astype(np.float32)
        times["random"] = (time.perf_counter() - t) / n_batches  # per minibatch, all layers
    return times


def part_layout(h5, layers, rows_limit, scratch):
    matrices = {name: h5[f"layers/{name}/train"][:rows_limit] for name in layers}
    raw = sum(x.nbytes for x in matrices.values())
    n = len(next(iter(matrices.values())))
    print(f"\n{len(layers)} probe points × {n} rows = {raw / 2**20:.0f} MiB as float32; "
          f"{CHUNK_BYTES // 1024} KiB chunks of whole rows\n")
    print("| layout | size (MiB) | size / float32 | write (s) | whole read (s) | 2048-row slices (s) | random 256-row batch (ms) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, dtype, chunked, filt in LAYOUTS:
        path = Path(scratch) / "layout.h5"
        write = write_layout(path, matrices, dtype, chunked, filt)
        os.sync()
        size = path.stat().st_size
        reads = read_patterns(path, list(matrices))
        print(f"| {label} | {size / 2**20:.0f} | {size / raw:.2f} | {write:.2f} | {reads['whole']:.2f} | "
              f"{reads['slices']:.2f} | {1000 * reads['random']:.0f} |")
        path.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--h5", required=True)
    ap.add_argument("--part", choices=["float16", "layout", "both"], default="both")
    ap.add_argument("--layers", default="conv1,conv4,conv7,conv10,conv13,fc1")
    ap.add_argument("--train-rows", type=int, default=10_000, help="stratified train rows for the probes")
    ap.add_argument("--layout-rows", type=int, default=10_000, help="rows per matrix in the layout part")
    ap.add_argument("--l2-grid", default="1e-3,1e-2,1e-1")
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--scratch", default=tempfile.gettempdir())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    layers = args.layers.split(",")
    print(f"{args.h5}; {args.threads} torch thread(s)")
    with h5py.File(args.h5, "r") as h5:
        if args.part in ("float16", "both"):
            part_float16(h5, layers, args.train_rows, [float(v) for v in args.l2_grid.split(",")], args.max_iter)
        if args.part in ("layout", "both"):
            with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
                part_layout(h5, layers, args.layout_rows, scratch)


if __name__ == "__main__":
    main()
