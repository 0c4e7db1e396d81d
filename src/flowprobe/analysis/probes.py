"""Linear probes: multinomial logistic regression on one probe point's features (DESIGN.md §5).

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
the train split, then the probe is refit on the whole train split. `probe_table` runs this
for every probe point of an activations.h5.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from flowprobe import h5io
from flowprobe.analysis.probe_solvers import SklearnLBFGS, TorchLBFGS, as_numpy, objective  # noqa: F401
from flowprobe.errors import AnalysisError, ConfigError
from flowprobe.logs import with_progress

DEFAULT_L2_GRID = (1.0, 1e-1, 1e-2, 1e-3, 1e-4)
BACKENDS = ("torch", "sklearn")


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


def fit_probe(
    x_train,
    y_train,
    x_test,
    y_test,
    *,
    backend: str = "torch",
    l2: float | None = None,
    l2_grid=DEFAULT_L2_GRID,
    val_fraction: float = 0.1,
    max_iter: int = 1000,
    tol: float = 1e-4,
    device=None,
    seed: int = 0,
    overwrite_features: bool = False,
) -> ProbeResult:
    """Fit a probe on (x_train, y_train), report accuracy on train and test.

    x_*: [N, D] numpy arrays or torch tensors; y_*: [N] integer labels. With `l2=None` the
    penalty is selected from `l2_grid` on a `val_fraction` stratified hold-out.
    `overwrite_features=True` lets the torch backend standardise float32 CPU inputs in place
    (the probe stage owns the arrays it reads, so it saves a copy of the largest matrix).
    """
    _check_knobs(backend, l2, l2_grid, val_fraction, max_iter, tol)
    y_train, y_test = as_numpy(y_train).astype(np.int64), as_numpy(y_test).astype(np.int64)
    classes = np.unique(y_train)
    if len(classes) < 2:
        raise AnalysisError(f"probe needs at least 2 classes in the train split, got {classes.tolist()}")
    solver = _make_solver(backend, max_iter, tol, device)
    x_tr, x_te = solver.standardise(x_train, x_test, overwrite=overwrite_features)
    y_tr = np.searchsorted(classes, y_train)  # encoded 0..K-1, as sklearn's LabelEncoder
    val_acc, init = math.nan, None
    if l2 is None:
        l2, val_acc, init = _select_l2(solver, x_tr, y_tr, sorted(l2_grid, reverse=True), val_fraction, seed)
    fit = solver.fit(x_tr, y_tr, float(l2), init)
    return ProbeResult(
        train_acc=_accuracy(solver.logits(fit.params, x_tr), y_tr),
        test_acc=_accuracy(solver.logits(fit.params, x_te), y_test, classes),
        l2=float(l2),
        converged=bool(fit.converged),
        n_iter=int(fit.n_iter),
        backend=backend,
        val_acc=float(val_acc),
    )


def probe_table(h5_path, *, backend: str = "torch", progress: bool = True, **knobs) -> pd.DataFrame:
    """One probe per probe point of an activations.h5 (forward order; /output is not one).

    Columns: point_frame + train_acc, test_acc, l2, converged, n_iter, backend, n_features,
    val_acc. `knobs` are fit_probe's keywords. One probe point's features are in memory at a time.
    """
    with h5io.open_activations(h5_path) as h5:
        frame = h5io.point_frame(h5)
        y_train, y_test = h5io.labels(h5, "train"), h5io.labels(h5, "test")
        rows = []
        for name in with_progress(frame["probe_point"], "probes", enabled=progress, step="probe point", unit="points"):
            x_train, x_test = h5io.features(h5, name, "train"), h5io.features(h5, name, "test")
            result = fit_probe(x_train, y_train, x_test, y_test, backend=backend, overwrite_features=True, **knobs)
            values = asdict(result)
            rows.append({**values, "n_features": x_train.shape[1], "val_acc": values.pop("val_acc")})
    return pd.concat([frame, pd.DataFrame(rows)], axis=1)


def _select_l2(solver, x, y, grid, val_fraction, seed):
    """Fit along the grid (strong to weak penalty, warm-started where the backend can) and
    keep the l2 with the lowest held-out cross-entropy; returns (l2, held-out accuracy, params).

    Cross-entropy, not accuracy, decides: accuracy on a few hundred rows is a step function,
    and two solvers that meet the same optimum within tol can differ by one row and flip
    the choice; the cross-entropy moves continuously with the solution.
    """
    fit_idx, val_idx = stratified_split(y, val_fraction, seed)
    x_fit, x_val = solver.rows(x, fit_idx), solver.rows(x, val_idx)
    y_fit, y_val = y[fit_idx], y[val_idx]
    best, init = None, None
    for l2 in grid:
        fit = solver.fit(x_fit, y_fit, l2, init)
        logits = solver.logits(fit.params, x_val)
        loss = _cross_entropy(logits, y_val)
        if best is None or loss < best[0]:
            best = (loss, l2, _accuracy(logits, y_val), fit.params)
        init = fit.params
    return best[1:]


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


def _accuracy(logits: np.ndarray, y: np.ndarray, classes: np.ndarray | None = None) -> float:
    pred = np.argmax(logits, axis=1)
    return float(np.mean((pred if classes is None else classes[pred]) == y))


def _cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean -log softmax(logits)_y, computed stably in float64."""
    logits = logits.astype(np.float64)
    top = logits.max(1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(logits - top).sum(1))
    return float(np.mean(lse - logits[np.arange(len(y)), y]))


def _check_knobs(backend, l2, l2_grid, val_fraction, max_iter, tol) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"probe backend '{backend}' is unknown; use one of {BACKENDS}")
    grid = [l2] if l2 is not None else list(l2_grid)
    if not grid or any(not (v > 0 and math.isfinite(v)) for v in grid):
        raise ConfigError(f"probe l2 values must be finite and > 0, got {grid}")
    if not 0 < val_fraction < 1:
        raise ConfigError(f"probe val_fraction must lie in (0, 1), got {val_fraction}")
    if max_iter < 1 or not tol > 0:
        raise ConfigError(f"probe max_iter must be >= 1 and tol > 0, got {max_iter}, {tol}")


def _make_solver(backend, max_iter, tol, device):
    if backend == "torch":
        return TorchLBFGS(max_iter, tol, device)
    return SklearnLBFGS(max_iter, tol)
