"""Benchmark: flowprobe's torch probe vs scikit-learn lbfgs at equal l2, and the probe stage.

Per feature set, `fit_probe` first chooses l2 on the default grid (the "l2 grid + refit" row),
then three solvers fit at that same l2 and tolerance: flowprobe's torch backend, sklearn
`LogisticRegression(lbfgs)` on float32 features (it then stays in float32: the fastest way
to run it) and the float64 sklearn backend. Times are CPU seconds of this process
(`time.process_time`, robust to other jobs on shared cores) and wall seconds, fastest of
`--repeats` interleaved rounds, with the thread counts printed.

Feature sets: `--h5 PATH` with `--layers` (default conv4 conv7 conv11) on `--rows` stratified
train rows (default 20,000) and the whole test split; without --h5, two synthetic sets:
"easy" (10,000 x 4,096, well conditioned: both solvers converge in a few iterations) and
"hard" (20,000 x 2,048, a decaying spectrum of correlated features).
`--stage` instead times `probe_table` over every probe point of the --h5 file (defaults of
the config) and, with `--dump-benchmark` (the activations rule's benchmark TSV), compares
it with the dump.

    python benchmarks/bench_probes.py [--h5 .../activations.h5 [--layers conv4 conv7]] [--threads 1]
    python benchmarks/bench_probes.py --stage --h5 .../activations.h5 --dump-benchmark .../vgg16_seed0.tsv
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from types import SimpleNamespace

import numpy as np
import torch

from flowprobe import h5io
from flowprobe.analysis.probes import fit_probe, probe_table, stratified_split
from flowprobe.config import DEFAULTS


def h5_features(path: str, layer: str, rows: int):
    """`rows` stratified train rows (stored splits are sorted by class) and the test split."""
    with h5io.open_activations(path) as h5:
        y = h5io.labels(h5, "train")
        idx = np.sort(stratified_split(y, min(rows / len(y), 0.999999), seed=0)[1]) if rows < len(y) else slice(None)
        data = [h5[f"layers/{layer}/train"][idx], y[idx], h5io.features(h5, layer, "test"), h5io.labels(h5, "test")]
    return data, f"{layer} ({os.path.basename(path)})"


def synthetic(kind: str):
    """easy: class means plus isotropic noise; hard: 64-dim class structure mixed into
    correlated, decaying-spectrum features, ReLU (CNN-like). 10 classes, 5,000 test rows."""
    rng = np.random.default_rng(0)
    n, d = (10000, 4096) if kind == "easy" else (20000, 2048)
    out = []
    if kind == "easy":
        means = rng.normal(size=(10, d)) * 0.05
        for m in (n, 5000):
            y = rng.integers(0, 10, size=m)
            out += [(means[y] + rng.normal(size=(m, d))).astype(np.float32), y]
    else:
        mix, means = rng.normal(size=(64, d)) / 8, rng.normal(size=(10, 64))
        spectrum = np.linspace(2, 0.05, 64)
        for m in (n, 5000):
            y = rng.integers(0, 10, size=m)
            latent = 0.3 * means[y] + rng.normal(size=(m, 64)) * spectrum
            out += [np.maximum(latent @ mix + 0.3 * rng.normal(size=(m, d)), 0).astype(np.float32), y]
    return out, f"synthetic {kind}"


def sklearn_float32(x_train, y_train, x_test, y_test, *, l2: float):
    """sklearn on float32 standardised features, C = 1/(l2 n), the probe defaults' max_iter/tol."""
    from sklearn.linear_model import LogisticRegression

    max_iter, tol = DEFAULTS["probes"]["max_iter"], DEFAULTS["probes"]["tol"]
    mean, std = x_train.mean(0), x_train.std(0)
    std[std == 0] = 1.0
    x_train, x_test = (((v - mean) / std).astype(np.float32) for v in (x_train, x_test))
    model = LogisticRegression(C=1.0 / (l2 * len(y_train)), max_iter=max_iter, tol=tol).fit(x_train, y_train)
    n_iter = int(model.n_iter_.max())
    return SimpleNamespace(test_acc=model.score(x_test, y_test), l2=l2, converged=n_iter < max_iter, n_iter=n_iter)


def thread_report() -> str:
    from threadpoolctl import threadpool_info

    pools = ", ".join(f"{i['internal_api']} {i['num_threads']}" for i in threadpool_info())
    return f"torch {torch.get_num_threads()} ({torch.backends.mkl.is_available() and 'MKL' or 'BLAS'}), thread pools: {pools}"


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.process_time() - cpu, time.perf_counter() - wall, result


def fastest(runs: list, repeats: int) -> list:
    """(name, cpu s, wall s, result) per run: fastest of `repeats` interleaved rounds."""
    best = {}
    for _ in range(repeats):
        for name, fn in runs:
            cpu, wall, result = timed(fn)
            if name not in best or cpu < best[name][0]:
                best[name] = (cpu, wall, result)
    return [(name, *best[name]) for name, _ in runs]


def compare(data, source: str, repeats: int, with_float64: bool) -> None:
    grid_cpu, grid_wall, chosen = timed(lambda: fit_probe(*data, device="cpu"))
    l2 = chosen.l2
    runs = [
        ("torch (flowprobe)", lambda: fit_probe(*data, l2=l2, device="cpu")),
        ("sklearn float32", lambda: sklearn_float32(*data, l2=l2)),
    ]
    if with_float64:
        runs.append(("sklearn float64 (backend)", lambda: fit_probe(*data, backend="sklearn", l2=l2)))
    rows = fastest(runs, repeats)
    ours = rows[0][1]
    print(f"\n{source}: train {data[0].shape}, test {data[2].shape}")
    print("| solver | l2 | CPU s | wall s | n_iter | converged | test acc | torch speed-up (CPU) |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| torch, l2 grid {list(DEFAULTS['probes']['l2_grid'])} + refit | {l2:g} | {grid_cpu:.2f} | {grid_wall:.2f} "
        f"| {chosen.n_iter} | {chosen.converged} | {100 * chosen.test_acc:.2f} | |"
    )
    for name, cpu, wall, r in rows:
        print(
            f"| {name} | {l2:g} | {cpu:.2f} | {wall:.2f} | {r.n_iter} | {r.converged} | {100 * r.test_acc:.2f} "
            f"| {cpu / ours:.1f}x |"
        )


def stage(h5: str, dump_benchmark: str | None) -> None:
    cpu, wall, table = timed(lambda: probe_table(h5, progress=False, device="cpu"))
    cols = ["probe_point", "n_features", "l2", "n_iter", "converged", "test_acc", "test_acc_lo", "test_acc_hi"]
    print(table[cols].to_string(index=False))
    print(f"\nprobe stage ({len(table)} points, defaults {DEFAULTS['probes']}): CPU {cpu:.1f} s, wall {wall:.1f} s")
    if dump_benchmark:
        with open(dump_benchmark) as f:
            dump = next(csv.DictReader(f, delimiter="\t"))
        d_wall, d_cpu = float(dump["s"]), float(dump["cpu_time"])
        print(
            f"dump (snakemake benchmark): wall {d_wall:.1f} s, CPU {d_cpu:.1f} s -> "
            f"probe/dump: wall {wall / d_wall:.2f}x, CPU {cpu / d_cpu:.2f}x (goal < 2x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--h5", help="activations.h5 to take the features from")
    parser.add_argument("--layers", nargs="+", default=["conv4", "conv7", "conv11"])
    parser.add_argument("--rows", type=int, default=20000, help="train rows taken from --h5")
    parser.add_argument("--repeats", type=int, default=1, help="report the fastest of this many rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    parser.add_argument("--no-float64", action="store_true", help="skip the (slow) float64 sklearn row")
    parser.add_argument("--stage", action="store_true", help="time probe_table over the whole --h5")
    parser.add_argument("--dump-benchmark", help="benchmark TSV of the activations rule, for --stage")
    args = parser.parse_args()
    import sklearn.linear_model  # noqa: F401  (loads sklearn's OpenMP runtime, so that the limit below reaches it)
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)  # BLAS and OpenMP of every library loaded so far
    print(f"threads: {thread_report()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}; device cpu")
    if args.stage:
        stage(args.h5, args.dump_benchmark)
        return
    sets = (
        [h5_features(args.h5, layer, args.rows) for layer in args.layers]
        if args.h5
        else [synthetic("easy"), synthetic("hard")]
    )
    x, y = sets[0][0][0][::50], sets[0][0][1][::50]  # strided: stored rows may be sorted by class
    fit_probe(x, y, x, y, l2=1e-2)  # lazy torch/BLAS init
    for data, source in sets:
        compare(data, source, args.repeats, not args.no_float64)


if __name__ == "__main__":
    main()
