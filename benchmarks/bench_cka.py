"""Benchmark: MinibatchCKA (all pairs from one product) vs a plain per-pair numpy estimator.

The task is the study's Fig. 9 heatmap: 16 layers of one pathway against 16 of the other,
minibatch debiased CKA (Nguyen et al. 2021) over the same minibatches. The reference
computes, for every pair and batch, both Grams in float64 numpy and Song et al.'s HSIC_1
term by term; MinibatchCKA computes every layer's U-centred Gram once per batch and all
HSIC_1 values from one [L, b*b] x [b*b, L] product. Features are synthetic but shaped like
the stored pooled maps (C*4*4 columns) and drift along a latent signal with depth.

    python benchmarks/bench_cka.py [--layers 16] [--rows 2048] [--batch 256] [--channels 32]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from flowprobe.analysis.cka import MinibatchCKA


def pathway_batches(n_layers: int, rows: int, batch: int, width: int, seed: int = 0):
    """Per minibatch: (layers of pathway a, layers of pathway b), float32 [batch, width] each.
    Layer l reads the latent code cos(t_l) u + sin(t_l) v with t_l rising from 0 to pi/2 along
    the pathway, so the heatmap has the diagonal structure of the study's Fig. 9."""
    rng = np.random.default_rng(seed)
    mixes = rng.normal(size=(2, n_layers, 32, width)).astype(np.float32) / 6
    angles = np.linspace(0, np.pi / 2, n_layers)
    for _ in range(rows // batch):
        u, v = rng.normal(size=(2, batch, 32)).astype(np.float32)
        yield [
            [np.maximum((np.cos(t) * u + np.sin(t) * v) @ mixes[p, l]
                        + 0.5 * rng.normal(size=(batch, width)).astype(np.float32), 0)
             for l, t in enumerate(angles)]
            for p in (0, 1)
        ]


def hsic1(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. 2012 HSIC_1 from two Grams (zero diagonals), float64."""
    n = len(k)
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(lt, 0.0)
    k1, l1 = kt.sum(1), lt.sum(1)
    value = (kt * lt).sum() + k1.sum() * l1.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * (k1 @ l1)
    return value / (n * (n - 3))


def per_pair(batches) -> np.ndarray:
    """The same estimator, one layer pair at a time: Grams recomputed for every pair."""
    n_a, n_b = len(batches[0][0]), len(batches[0][1])
    sums = np.zeros((n_a, n_b, 3))
    for i in range(n_a):
        for j in range(n_b):
            for a, b in batches:
                x, y = a[i].astype(np.float64), b[j].astype(np.float64)
                k, l = x @ x.T, y @ y.T
                sums[i, j] += hsic1(k, l), hsic1(k, k), hsic1(l, l)
    return sums[..., 0] / np.sqrt(sums[..., 1] * sums[..., 2])


def minibatch(batches) -> np.ndarray:
    mcka = MinibatchCKA(len(batches[0][0]), len(batches[0][1]), device="cpu")
    for a, b in batches:
        mcka.update(a, b)
    return mcka.compute()


def blas_threads() -> str:
    from threadpoolctl import threadpool_info

    return ", ".join(f"{i['internal_api']} {i['num_threads']}" for i in threadpool_info() if i["user_api"] == "blas")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--channels", type=int, default=32, help="features per layer = channels * 16")
    parser.add_argument("--repeats", type=int, default=3, help="report the fastest of this many runs")
    parser.add_argument("--threads", type=int, help="torch and BLAS threads (default: as configured)")
    args = parser.parse_args()
    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    batches = list(pathway_batches(args.layers, args.rows, args.batch, args.channels * 16))
    minibatch(batches[:1])  # warm-up: lazy torch/BLAS initialisation
    print(f"heatmap {args.layers}x{args.layers}, {args.rows} rows in batches of {args.batch}, "
          f"{args.channels * 16} features per layer")
    print(f"threads: torch {torch.get_num_threads()}, BLAS {blas_threads()}, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '-')}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}, device cpu")
    results = {}
    for _ in range(args.repeats):  # fastest of interleaved rounds: least disturbed by other processes
        for name, fn in (("per-pair numpy float64", per_pair), ("MinibatchCKA", minibatch)):
            start = time.perf_counter()
            cka = fn(batches)
            seconds = time.perf_counter() - start
            if name not in results or seconds < results[name][1]:
                results[name] = (cka, seconds)
    (ref, t_ref), (ours, t_ours) = results.values()
    print("\n| estimator | time (s) | speed-up | max abs diff vs per-pair | CKA range |")
    print("|---|---|---|---|---|")
    for name, (cka, seconds) in results.items():
        print(f"| {name} | {seconds:.2f} | {t_ref / seconds:.1f}x | {np.abs(cka - ref).max():.1e} | "
              f"{cka.min():.3f} .. {cka.max():.3f} |")


if __name__ == "__main__":
    main()
