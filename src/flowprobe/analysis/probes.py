"""Linear probes: multinomial logistic regression on one probe point's features (docs/design.md §5).

Both backends minimise the same objective on features standardised with train statistics,
for labels y_i in {0..K-1} (the classes present in the train split):

    L(W, b) = (1/n) sum_i [logsumexp_k(W_k x_i + b_k) - (W_{y_i} x_i + b_{y_i})] + (l2/2) ||W||_F^2

with the bias unpenalised. sklearn's `LogisticRegression(solver='lbfgs')` minimises
C sum_i CE_i + 1/2 ||W||_F^2 (intercept unpenalised), which divided by C n is L with
l2 = 1/(C n); the sklearn backend therefore uses C = 1/(l2 n), n = rows of that fit
(C = 2/(l2 n) for two classes, where sklearn fits a single binomial weight vector).
Convergence means ||grad L||_inf <= tol before max_iter: scipy's `gtol` (sklearn's `tol`)
and torch's LBFGS `tolerance_grad` are both this max-abs norm of the gradient.

With l2=None, l2 is chosen from a grid by cross-entropy on a stratified held-out part of
a stratified subsample of the train split (at most `selection_rows` rows), then the probe is
refit on the whole train split, warm-started from the chosen fit. `probe_table` runs this
for every probe point of an activations.h5.

Test accuracy comes with a percentile-bootstrap confidence interval (Efron & Tibshirani
1993, ch. 13): the per-image correctness c_i of the fitted probe is resampled with
replacement `n_bootstrap` times, and [test_acc_lo, test_acc_hi] are the (1 -+ ci_level)/2
quantiles of the resampled means. The resampling is seeded, so reruns give identical
intervals, and every probe point of a run draws the same resamples (a paired bootstrap
across layers). The defaults of every knob live in `flowprobe.config.DEFAULTS["probes"]`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

from flowprobe import h5io
from flowprobe.analysis.probe_solvers import SklearnLBFGS, TorchLBFGS, as_numpy, chunk_rows, objective  # noqa: F401
from flowprobe.config import DEFAULTS
from flowprobe.errors import AnalysisError, ConfigError
from flowprobe.logs import with_progress

BACKENDS = ("torch", "sklearn")
_D = DEFAULTS["probes"]


@dataclass(frozen=True)
class ProbeResult:
    """Accuracies of one fitted probe and how its optimisation ended."""

    train_acc: float
    test_acc: float
    l2: float
    converged: bool
    n_iter: int
    backend: str
    val_acc: float  # held-out accuracy of the chosen l2; NaN when l2 was given
    test_acc_lo: float  # percentile-bootstrap interval of test_acc at ci_level
    test_acc_hi: float


def fit_probe(
    x_train,
    y_train,
    x_test,
    y_test,
    *,
    backend: str = _D["backend"],
    l2: float | None = None,
    l2_grid=tuple(_D["l2_grid"]),
    val_fraction: float = _D["val_fraction"],
    selection_rows: int | None = _D["selection_rows"],
    max_iter: int = _D["max_iter"],
    tol: float = _D["tol"],
    seed: int = _D["seed"],
    n_bootstrap: int = _D["n_bootstrap"],
    ci_level: float = _D["ci_level"],
    device=None,
    overwrite_features: bool = False,
) -> ProbeResult:
    """Fit a probe on (x_train, y_train), report accuracy on train and test.

    Args:
        x_train, x_test: [N, D] features, numpy arrays or torch tensors.
        y_train, y_test: [N] integer labels.
        backend: "torch" (L-BFGS on the device) or "sklearn" (the float64 reference).
        l2: penalty of the objective; None selects it from `l2_grid` by held-out
            cross-entropy on a `val_fraction` stratified hold-out of at most
            `selection_rows` train rows (None: all rows). A grid of one value is that l2
            (nothing to select, no hold-out, val_acc NaN).
        max_iter, tol: stop after max_iter L-BFGS iterations or when ||grad L||_inf <= tol.
        seed: seeds the selection subsample, the hold-out and the bootstrap.
        n_bootstrap, ci_level: resamples and level of the test-accuracy interval.
        device: torch device of the torch backend (None: CUDA when available).
        overwrite_features: let the torch backend standardise and reorder float32 CPU inputs
            in place (the probe stage owns the arrays it reads, so it saves copies).

    Returns:
        ProbeResult with train/test accuracy, the test interval, the l2 used, convergence.
    """
    _check_knobs(backend, l2, l2_grid, val_fraction, max_iter, tol, n_bootstrap, ci_level)
    y_train, y_test = as_numpy(y_train).astype(np.int64), as_numpy(y_test).astype(np.int64)
    classes = np.unique(y_train)
    if len(classes) < 2:
        raise AnalysisError(f"probe needs at least 2 classes in the train split, got {classes.tolist()}")
    solver = _make_solver(backend, max_iter, tol, device)
    x_tr, x_te = solver.standardise(x_train, x_test, overwrite=overwrite_features)
    y_tr = np.searchsorted(classes, y_train)  # encoded 0..K-1, as sklearn's LabelEncoder
    val_acc, init = math.nan, None
    if l2 is None and len(l2_grid) == 1:
        l2 = l2_grid[0]
    if l2 is None:
        fit_idx, val_idx = selection_split(y_tr, val_fraction, selection_rows, seed)
        y_tr = y_tr[move_rows_to_front(x_tr, [fit_idx, val_idx])]
        l2, val_acc, init = _select_l2(solver, x_tr, y_tr, sorted(l2_grid, reverse=True), len(fit_idx), len(val_idx))
    fit = solver.fit(x_tr, y_tr, float(l2), init)
    correct = classes[np.argmax(solver.logits(fit.params, x_te), axis=1)] == y_test
    lo, hi = bootstrap_interval(correct, n_bootstrap, ci_level, seed)
    return ProbeResult(
        train_acc=_accuracy(solver.logits(fit.params, x_tr), y_tr),
        test_acc=float(np.mean(correct)),
        l2=float(l2),
        converged=bool(fit.converged),
        n_iter=int(fit.n_iter),
        backend=backend,
        val_acc=float(val_acc),
        test_acc_lo=lo,
        test_acc_hi=hi,
    )


def probe_table(h5_path, *, backend: str = _D["backend"], progress: bool = True, **knobs) -> pd.DataFrame:
    """One probe per probe point of an activations.h5 (forward order; /output is not one).

    Args:
        h5_path: an activations.h5 honouring the contract of flowprobe.h5io.
        backend: as in fit_probe.
        progress: show a progress bar on stderr.
        knobs: fit_probe's keywords (the config's `probes:` section).

    Returns:
        point_frame + train_acc, test_acc, l2, converged, n_iter, backend, n_features,
        val_acc, test_acc_lo, test_acc_hi. One probe point's features are in memory at a time.
    """
    with h5io.open_activations(h5_path) as h5:
        frame = h5io.point_frame(h5)
        y_train, y_test = h5io.labels(h5, "train"), h5io.labels(h5, "test")
        rows = []
        for name in with_progress(frame["probe_point"], "probes", enabled=progress, step="probe point", unit="points"):
            x_train, x_test = h5io.features(h5, name, "train"), h5io.features(h5, name, "test")
            result = fit_probe(x_train, y_train, x_test, y_test, backend=backend, overwrite_features=True, **knobs)
            del x_train, x_test  # free this point's features before the next is read
            values = asdict(result)
            rows.append(
                {
                    **values,
                    "n_features": h5[f"layers/{name}/train"].shape[1],
                    "val_acc": values.pop("val_acc"),
                    "test_acc_lo": values.pop("test_acc_lo"),
                    "test_acc_hi": values.pop("test_acc_hi"),
                }
            )
    return pd.concat([frame, pd.DataFrame(rows)], axis=1)


def _select_l2(solver, x, y, grid, n_fit, n_val):
    """Fit along the grid on rows [0, n_fit) (strong to weak penalty, warm-started where the
    backend can) and keep the l2 with the lowest cross-entropy on rows [n_fit, n_fit + n_val);
    returns (l2, held-out accuracy, params).

    Cross-entropy, not accuracy, decides: accuracy on a few hundred rows is a step function,
    and two solvers that meet the same optimum within tol can differ by one row and flip
    the choice; the cross-entropy moves continuously with the solution.

    The path stops at the first l2 whose held-out cross-entropy is above the best so far:
    weaker penalties only overfit more (the held-out loss along an l2 path falls to one
    minimum and rises after it), and they are the slowest fits of the path.
    """
    x_fit, x_val = x[:n_fit], x[n_fit : n_fit + n_val]  # views: no copy of the features
    y_fit, y_val = y[:n_fit], y[n_fit : n_fit + n_val]
    best, init = None, None
    for l2 in grid:
        fit = solver.fit(x_fit, y_fit, l2, init)
        logits = solver.logits(fit.params, x_val)
        loss = _cross_entropy(logits, y_val)
        if best is not None and loss > best[0]:
            break  # past the minimum of the held-out loss
        best = (loss, l2, _accuracy(logits, y_val), fit.params)
        init = fit.params
    return best[1:]


def selection_split(y: np.ndarray, val_fraction: float, selection_rows: int | None, seed: int):
    """Row indices (fit, val) of the l2 selection: a stratified subsample of at most
    `selection_rows` rows (all rows when None or larger), split by `stratified_split`."""
    rows = np.arange(len(y))
    if selection_rows is not None and selection_rows < len(y):
        rows = np.sort(stratified_split(y, selection_rows / len(y), seed + 1)[1])
    fit_idx, val_idx = stratified_split(y[rows], val_fraction, seed)
    return rows[fit_idx], rows[val_idx]


def stratified_split(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (fit, val): per class, round(val_fraction * count) rows go to val,
    at least one and never all of a class with two or more rows."""
    rng = np.random.default_rng(seed)
    fit_idx, val_idx = [], []
    for c in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == c))
        n_val = min(max(int(round(val_fraction * len(rows))), 1), len(rows) - 1)
        val_idx.append(rows[:n_val])
        fit_idx.append(rows[n_val:])
    val_idx = np.sort(np.concatenate(val_idx))
    if len(val_idx) == 0:
        raise AnalysisError("the train split is too small to hold out a validation part; pass l2=... explicitly")
    return np.sort(np.concatenate(fit_idx)), val_idx


def move_rows_to_front(x, groups: list[np.ndarray]) -> np.ndarray:
    """Permute the rows of `x` (tensor or array) in place so that the rows of groups[0] come
    first, then those of groups[1], ...; returns `source` with new x[i] = old x[source[i]].

    Rows are swapped in chunks of probe_solvers.CHUNK_BYTES, not through a copy of x: the
    l2 selection then works on views of one matrix.
    """
    source, where, start = np.arange(len(x)), np.arange(len(x)), 0
    as_index = (lambda i: torch.as_tensor(i, device=x.device)) if isinstance(x, torch.Tensor) else (lambda i: i)
    step = chunk_rows(x, x.itemsize if isinstance(x, np.ndarray) else x.element_size())
    for group in groups:
        stop = start + len(group)
        pos = where[group]
        incoming = pos[pos >= stop]  # wanted rows still outside [start, stop)
        vacant = np.ones(stop - start, dtype=bool)
        vacant[pos[pos < stop] - start] = False
        outgoing = np.flatnonzero(vacant) + start  # positions in [start, stop) holding other rows
        for i in range(0, len(incoming), step):
            a, b = outgoing[i : i + step], incoming[i : i + step]
            held = x[as_index(a)]
            x[as_index(a)] = x[as_index(b)]
            x[as_index(b)] = held
            source[a], source[b] = source[b], source[a].copy()
            where[source[a]], where[source[b]] = a, b
        start = stop
    return source


def bootstrap_interval(correct: np.ndarray, n_bootstrap: int, level: float, seed: int) -> tuple[float, float]:
    """Percentile-bootstrap interval of mean(correct): the (1 -+ level)/2 quantiles of the
    means of `n_bootstrap` resamples of the per-image correctness, drawn with replacement."""
    correct = np.asarray(correct, dtype=np.uint8)
    n = len(correct)
    rng = np.random.default_rng([seed, 0xB007])  # its own stream: the hold-out draws from `seed`
    per_chunk = max(1, (1 << 21) // max(n, 1))  # ~8 MiB of int32 indices at a time
    sizes = [(min(per_chunk, n_bootstrap - i), n) for i in range(0, n_bootstrap, per_chunk)]
    draws = (rng.integers(0, n, size=size, dtype=np.int32) for size in sizes)  # row indices of the resamples
    hits = np.concatenate([correct[rows].sum(1, dtype=np.int64) for rows in draws])  # correct images per resample
    means = hits / n
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _accuracy(logits: np.ndarray, y: np.ndarray, classes: np.ndarray | None = None) -> float:
    pred = np.argmax(logits, axis=1)
    return float(np.mean((pred if classes is None else classes[pred]) == y))


def _cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean -log softmax(logits)_y, computed stably in float64."""
    logits = logits.astype(np.float64)
    top = logits.max(1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logits - top).sum(1))
    return float(np.mean(lse - logits[np.arange(len(y)), y]))


def _check_knobs(backend, l2, l2_grid, val_fraction, max_iter, tol, n_bootstrap, ci_level) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"probe backend '{backend}' is unknown; use one of {BACKENDS}")
    grid = [l2] if l2 is not None else list(l2_grid)
    if not grid or any(not (v > 0 and math.isfinite(v)) for v in grid):
        raise ConfigError(f"probe l2 values must be finite and > 0, got {grid}")
    if not 0 < val_fraction < 1:
        raise ConfigError(f"probe val_fraction must lie in (0, 1), got {val_fraction}")
    if max_iter < 1 or not tol > 0:
        raise ConfigError(f"probe max_iter must be >= 1 and tol > 0, got {max_iter}, {tol}")
    if n_bootstrap < 1 or not 0 < ci_level < 1:
        raise ConfigError(f"probe n_bootstrap must be >= 1 and ci_level in (0, 1), got {n_bootstrap}, {ci_level}")


def _make_solver(backend, max_iter, tol, device):
    if backend == "torch":
        return TorchLBFGS(max_iter, tol, device)
    return SklearnLBFGS(max_iter, tol)
