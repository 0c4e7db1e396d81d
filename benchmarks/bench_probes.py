"""Benchmark: flowprobe's torch probe vs the sklearn lbfgs reference on one real-sized layer.

Both backends run fit_probe on the same features, so they solve the same objective
(see flowprobe.analysis.probes) with the same l2 selection protocol. Feature source, first
that applies: `--h5 PATH` (a layer of an activations.h5, default the one whose width is
closest to 2048); the CIFAR-10 JPEG archive (features of a randomly initialised CNN, the
4x4 adaptive-avg-pooled 128-channel map = 2048 features); else synthetic features.

    python benchmarks/bench_probes.py [--h5 results/runs/.../activations.h5] [--layer NAME]
"""

from __future__ import annotations

import argparse
import io
import os
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from flowprobe import h5io
from flowprobe.analysis.probes import fit_probe

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz"


def h5_features(path: str, layer: str | None):
    with h5io.open_activations(path) as h5:
        names = h5io.probe_point_names(h5)
        widths = {n: h5[f"layers/{n}/train"].shape[1] for n in names}
        layer = layer or min(names, key=lambda n: abs(widths[n] - 2048))
        data = [h5io.features(h5, layer, "train"), h5io.labels(h5, "train")]
        data += [h5io.features(h5, layer, "test"), h5io.labels(h5, "test")]
    return data, f"{path}:{layer}"


def cifar_images(archive: Path, per_class: dict[str, int]):
    """The first `per_class[split]` JPEGs of every class, as uint8 [N, 32, 32, 3] and labels."""
    from PIL import Image

    images, labels, counts = {s: [] for s in per_class}, {s: [] for s in per_class}, {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) != 3 or parts[0] not in per_class:
                continue
            split, cls, _ = parts
            if counts.get((split, cls), 0) < per_class[split]:
                counts[(split, cls)] = counts.get((split, cls), 0) + 1
                images[split].append(np.asarray(Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB")))
                labels[split].append(cls)
    classes = sorted(set(labels["train"]))
    return {s: (np.stack(images[s]), np.array([classes.index(c) for c in labels[s]])) for s in per_class}


def cnn_features(archive: Path, n_train: int, n_test: int):
    """Random-init conv net (3->64->128 s2->128, BN in batch-statistics mode) pooled to 4x4."""
    data = cifar_images(archive, {"train": n_train // 10, "test": n_test // 10})
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
        nn.Conv2d(128, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(),
    )
    out = []
    for split in ("train", "test"):
        x = torch.tensor(data[split][0]).permute(0, 3, 1, 2).float() / 255
        x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
        with torch.no_grad():
            out += [torch.cat([net(b) for b in x.split(500)]).numpy(), data[split][1]]
    return out, f"random-init CNN on CIFAR-10 JPEGs ({archive.name})"


def synthetic_features(n_train: int, n_test: int, d: int = 2048, k: int = 10):
    """Class means in a 64-dim subspace, a decaying spectrum of correlated noise, ReLU."""
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(64, d)) / 8
    means = rng.normal(size=(k, 64))
    out = []
    for n in (n_train, n_test):
        y = rng.integers(0, k, size=n)
        latent = 0.6 * means[y] + rng.normal(size=(n, 64)) * np.linspace(2, 0.1, 64)
        out += [np.maximum(latent @ mix + 0.3 * rng.normal(size=(n, d)), 0).astype(np.float32), y]
    return out, "synthetic (64-dim class structure, ReLU)"


def sklearn_float32(x_train, y_train, x_test, y_test, *, l2: float, max_iter: int = 1000, tol: float = 1e-4):
    """sklearn called directly on float32 standardised features (it then stays in float32):
    the fastest way to run the reference, same objective, C = 1/(l2 n)."""
    from sklearn.linear_model import LogisticRegression

    mean, std = x_train.mean(0), x_train.std(0)
    std[std == 0] = 1.0
    x_train, x_test = (((v - mean) / std).astype(np.float32) for v in (x_train, x_test))
    model = LogisticRegression(C=1.0 / (l2 * len(y_train)), max_iter=max_iter, tol=tol).fit(x_train, y_train)
    n_iter = int(model.n_iter_.max())
    return SimpleNamespace(test_acc=model.score(x_test, y_test), train_acc=model.score(x_train, y_train),
                           l2=l2, converged=n_iter < max_iter, n_iter=n_iter)


def blas_threads() -> str:
    from threadpoolctl import threadpool_info

    return ", ".join(f"{i['internal_api']} {i['num_threads']}" for i in threadpool_info() if i["user_api"] == "blas")


def fastest(runs: list, repeats: int) -> list:
    """(mode, name, seconds, result) per run: the fastest of `repeats` rounds, the rounds
    interleaved so that a burst of load from other processes does not hit one run only."""
    best = {}
    for _ in range(repeats):
        for mode, name, fn in runs:
            start = time.perf_counter()
            result = fn()
            seconds = time.perf_counter() - start
            if (mode, name) not in best or seconds < best[(mode, name)][0]:
                best[(mode, name)] = (seconds, result)
    return [(mode, name, *best[(mode, name)]) for mode, name, _ in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--h5", help="activations.h5 to take the layer from")
    parser.add_argument("--layer", help="probe point name (default: width closest to 2048)")
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--n-test", type=int, default=2000)
    parser.add_argument("--l2", type=float, default=1e-3, help="penalty of the fixed-l2 comparison")
    parser.add_argument("--repeats", type=int, default=3, help="report the fastest of this many runs")
    parser.add_argument("--threads", type=int, help="torch and BLAS threads (default: as configured)")
    args = parser.parse_args()
    if args.threads:
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)

    if args.h5:
        data, source = h5_features(args.h5, args.layer)
    elif ARCHIVE.exists():
        data, source = cnn_features(ARCHIVE, args.n_train, args.n_test)
    else:
        data, source = synthetic_features(args.n_train, args.n_test)
    warm = np.random.default_rng(0).permutation(len(data[1]))[:300]  # stored splits may be class-sorted
    fit_probe(data[0][warm], data[1][warm], data[0][warm], data[1][warm], l2=1e-2)  # lazy torch/BLAS init
    print(f"features: {source}; train {data[0].shape}, test {data[2].shape}")
    print(f"threads: torch {torch.get_num_threads()}, BLAS {blas_threads()}, OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '-')}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}, device cpu")
    fixed, grid = f"fixed l2={args.l2:g}", "l2 grid + refit"
    runs = [
        (fixed, "sklearn (backend, float64)", lambda: fit_probe(*data, backend="sklearn", l2=args.l2)),
        (fixed, "sklearn (direct, float32)", lambda: sklearn_float32(*data, l2=args.l2)),
        (fixed, "torch", lambda: fit_probe(*data, backend="torch", device="cpu", l2=args.l2)),
        (grid, "sklearn (backend, float64)", lambda: fit_probe(*data, backend="sklearn")),
        (grid, "torch", lambda: fit_probe(*data, backend="torch", device="cpu")),
    ]
    rows = fastest(runs, args.repeats)
    torch_rows = {mode: (seconds, r) for mode, name, seconds, r in rows if name == "torch"}
    print("\n| mode | backend | fit time (s) | test acc | train acc | l2 | converged | n_iter | torch speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, name, seconds, r in rows:
        print(f"| {mode} | {name} | {seconds:.2f} | {100 * r.test_acc:.2f} | {100 * r.train_acc:.2f} | "
              f"{r.l2:g} | {r.converged} | {r.n_iter} | {seconds / torch_rows[mode][0]:.1f}x |")
    for mode, name, seconds, r in rows:
        if name != "torch":
            gap = 100 * abs(r.test_acc - torch_rows[mode][1].test_acc)
            print(f"{mode}: torch {seconds / torch_rows[mode][0]:.1f}x faster than {name}, "
                  f"test accuracy gap {gap:.2f} points")


if __name__ == "__main__":
    main()
