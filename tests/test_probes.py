"""Linear probes: both backends, the l2 <-> C mapping, l2 selection, the bootstrap interval,
probe_table (analysis/probes.py, analysis/probe_solvers.py)."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pandas as pd
import pytest
import torch
from h5fixtures import write_activations
from scipy import stats
from sklearn.linear_model import LogisticRegression

from flowprobe.analysis import probe_solvers
from flowprobe.analysis.probe_solvers import TorchLBFGS
from flowprobe.analysis.probes import (
    ProbeResult,
    bootstrap_interval,
    fit_probe,
    move_rows_to_front,
    objective,
    probe_table,
    selection_split,
    stratified_split,
)
from flowprobe.config import DEFAULTS
from flowprobe.errors import AnalysisError, ConfigError


def blobs(n: int, d: int, k: int, separation: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k Gaussian classes in d dims, means `separation` apart along random directions, offset and
    anisotropically scaled so that standardisation matters."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    means = separation * rng.normal(size=(k, d))
    x = means[y] + rng.normal(size=(n, d))
    return x * rng.uniform(0.1, 10, size=d) + 100.0, y


def split(x, y, n_train):
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def test_linearly_separable_classes_are_probed_to_near_perfect_accuracy():
    x, y = blobs(600, 10, 4, separation=4.0)
    result = fit_probe(*split(x, y, 400), l2=1e-3)
    assert isinstance(result, ProbeResult)
    assert result.train_acc == 1.0 and result.test_acc >= 0.99
    assert result.converged and 0 < result.n_iter < 1000 and result.backend == "torch"


@pytest.mark.parametrize("backend", ["torch", "sklearn"])
def test_random_labels_give_chance_accuracy_on_test(backend):
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(2400, 20)), rng.integers(0, 4, size=2400)
    result = fit_probe(*split(x, y, 400), backend=backend, l2=1e-3)
    assert abs(result.test_acc - 0.25) < 0.05
    assert result.train_acc > result.test_acc + 0.05  # it memorises the noise, but cannot transfer it


@pytest.mark.parametrize("k", [2, 5])
def test_torch_and_sklearn_agree_on_the_same_features(k):
    x, y = blobs(900, 30, k, separation=0.4, seed=k)
    data = split(x, y, 600)
    ours, ref = fit_probe(*data, backend="torch"), fit_probe(*data, backend="sklearn")
    assert ours.l2 == ref.l2  # the held-out cross-entropy picks the same grid point
    assert abs(ours.test_acc - ref.test_acc) <= 0.01
    assert abs(ours.train_acc - ref.train_acc) <= 0.01
    assert ours.converged and ref.converged
    assert 0.3 < ours.test_acc < 0.99  # not a trivial problem


@pytest.mark.parametrize("k", [2, 3])
def test_sklearn_C_mapping_minimises_the_torch_objective(k):
    """sklearn with C = 1/(l2 n) (2/(l2 n) for two classes) lands on the minimiser of L(W, b)."""
    x, y = blobs(300, 8, k, separation=0.5, seed=3)
    x = (x - x.mean(0)) / x.std(0)
    l2 = 0.05
    model = LogisticRegression(C=(2.0 if k == 2 else 1.0) / (l2 * len(y)), tol=1e-10, max_iter=5000).fit(x, y)
    w, b = model.coef_, model.intercept_
    if k == 2:
        w, b = np.concatenate([-w, w]) / 2, np.concatenate([-b, b]) / 2
    _, grad_w, grad_b = objective(torch.tensor(x), torch.tensor(y), l2, torch.tensor(w), torch.tensor(b))
    assert max(grad_w.abs().max(), grad_b.abs().max()) < 1e-7
    _, wrong_w, _ = objective(torch.tensor(x), torch.tensor(y), 2 * l2, torch.tensor(w), torch.tensor(b))
    assert wrong_w.abs().max() > 1e-3  # a factor of two in the mapping would show


@pytest.mark.parametrize("chunk_rows", [None, 7, 1])  # one chunk; 7 uneven chunks of 50 rows; one row each
@pytest.mark.parametrize("x_dtype", [torch.float64, torch.float32])  # float32 x: the float64 finish's casts
def test_objective_gradient_matches_autograd(monkeypatch, chunk_rows, x_dtype):
    if chunk_rows is not None:  # CACHE_BYTES sized so that a chunk holds chunk_rows float64 rows of 6 features
        monkeypatch.setattr(probe_solvers, "CACHE_BYTES", chunk_rows * 8 * 6)
    x, y = blobs(50, 6, 3, separation=1.0)
    x, y = torch.tensor(x / 100, dtype=x_dtype), torch.tensor(y)
    w = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(x.double() @ w.T + b, y) + 0.5 * 0.1 * (w**2).sum()
    loss.backward()
    ours, grad_w, grad_b = objective(x, y, 0.1, w.detach(), b.detach())
    assert ours.item() == pytest.approx(loss.item(), rel=1e-12)
    torch.testing.assert_close(grad_w, w.grad)
    torch.testing.assert_close(grad_b, b.grad)


def test_unconverged_fits_are_reported():
    x, y = blobs(300, 10, 3, separation=0.3)
    for backend in ("torch", "sklearn"):
        result = fit_probe(*split(x, y, 200), backend=backend, l2=1e-4, max_iter=2)
        assert not result.converged and result.n_iter <= 2


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize("overwrite", [False, True])
def test_standardise_matches_numpy_in_chunks_and_touches_inputs_only_when_allowed(monkeypatch, dtype, overwrite):
    """Moments and scaling run in row chunks (sized here to 3 rows of 16 features: 40 and 13
    rows split unevenly); features far from zero check the shifted moments; only float32
    inputs with overwrite are scaled in place, any other input is left as it was."""
    monkeypatch.setattr(probe_solvers, "CACHE_BYTES", 3 * 4 * 16)
    rng = np.random.default_rng(0)
    x_train = (1000 + rng.normal(size=(40, 16)) * np.linspace(0.5, 4, 16)).astype(dtype)
    x_test = (1000 + rng.normal(size=(13, 16))).astype(dtype)
    before = x_train.copy(), x_test.copy()
    train, test = TorchLBFGS(10, 1e-4, "cpu").standardise(x_train, x_test, overwrite=overwrite)
    ref = x_train.astype(np.float64)
    mean, std = ref.mean(0), ref.std(0)
    np.testing.assert_allclose(train.numpy(), (ref - mean) / std, atol=2e-3 if dtype == np.float16 else 1e-4)
    np.testing.assert_allclose(test.numpy(), (x_test.astype(np.float64) - mean) / std, atol=2e-3 if dtype == np.float16 else 1e-4)
    assert train.dtype == test.dtype == torch.float32
    in_place = overwrite and dtype == np.float32
    assert np.shares_memory(train.numpy(), x_train) == in_place
    assert np.shares_memory(test.numpy(), x_test) == in_place
    if not in_place:
        np.testing.assert_array_equal(x_train, before[0])
        np.testing.assert_array_equal(x_test, before[1])


@pytest.mark.parametrize("top_variance, steep", [(1.0, False), (3.0, False), (200.0, True), (2000.0, True)])
def test_the_steepness_test_agrees_with_the_eigenvalues(top_variance, steep):
    """Independent check: numpy's eigenvalues of X^T X / n against STEEP (top / mean); one
    direction (not an axis) carries `top_variance`, the other 63 unit variance."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(64, 64)))[0]
    x = rng.normal(size=(4000, 64)) * np.r_[np.sqrt(top_variance), np.ones(63)] @ basis.T
    eig = np.linalg.eigvalsh(x.T @ x / len(x))
    assert (eig[-1] / eig.mean() > probe_solvers.STEEP) == steep  # the cases are clear either way
    assert probe_solvers._spectrum_is_steep(torch.tensor(x, dtype=torch.float32)) == steep


def _standardised(x):
    std = x.std(0)
    return (x - x.mean(0)) / np.where(std > 0, std, 1.0)


@pytest.mark.parametrize("l2, tol", [(1e-2, 1e-4), (1e-4, 1e-6)])
def test_converged_means_the_float64_gradient_is_below_tol(l2, tol):
    """`converged` is checked against the gradient of the objective recomputed with autograd in
    float64 at the returned weights (the tight case needs the float64 finish)."""
    x, y = blobs(600, 40, 5, separation=0.3, seed=4)
    x = _standardised(x)
    solver = TorchLBFGS(max_iter=2000, tol=tol, device="cpu")
    fit = solver.fit(torch.tensor(x, dtype=torch.float32), y, l2)
    assert fit.converged and fit.n_iter < 2000
    w, b = (p.double().requires_grad_() for p in fit.params)
    x64 = torch.tensor(x)
    loss = torch.nn.functional.cross_entropy(x64 @ w.T + b, torch.tensor(y)) + 0.5 * l2 * (w**2).sum()
    loss.backward()
    # float32 weights returned: rounding them moves the gradient by ~1e-7 * curvature
    assert max(w.grad.abs().max(), b.grad.abs().max()) <= tol + 1e-6


def test_constant_features_torch_inputs_and_unseen_test_classes():
    x, y = blobs(300, 6, 3, separation=3.0)
    x[:, 2] = 7.0  # constant: standardised to 0, not NaN, and it changes nothing
    reference = fit_probe(*split(np.delete(x, 2, axis=1), y, 200), l2=1e-2)
    assert reference.test_acc == 1.0  # separable: every test row right
    y_test = y[200:].copy()
    y_test[:5] = 9  # a class the train split never saw counts as wrong
    result = fit_probe(torch.tensor(x[:200]), torch.tensor(y[:200]), torch.tensor(x[200:]), y_test, l2=1e-2)
    assert result.train_acc == reference.train_acc
    assert result.test_acc == pytest.approx(95 / 100)


def test_stratified_split_holds_out_every_class():
    y = np.repeat([0, 1, 2], [50, 30, 2])
    fit_idx, val_idx = stratified_split(y, 0.1, seed=0)
    assert sorted(np.concatenate([fit_idx, val_idx])) == list(range(len(y)))
    assert list(np.bincount(y[val_idx])) == [5, 3, 1]
    assert np.array_equal(stratified_split(y, 0.1, seed=0)[1], val_idx)


def test_selection_split_is_a_stratified_subsample_of_the_requested_size():
    y = np.repeat([0, 1, 2, 3], [400, 300, 200, 100])
    fit_idx, val_idx = selection_split(y, 0.2, 100, seed=0)
    rows = np.concatenate([fit_idx, val_idx])
    assert len(rows) == 100 and len(np.unique(rows)) == 100
    assert list(np.bincount(y[rows])) == [40, 30, 20, 10]  # class shares of the whole split
    assert list(np.bincount(y[val_idx])) == [8, 6, 4, 2]
    all_fit, all_val = selection_split(y, 0.2, None, seed=0)
    assert len(all_fit) + len(all_val) == len(y)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_move_rows_to_front_permutes_in_place(as_tensor, monkeypatch):
    monkeypatch.setattr(probe_solvers, "CHUNK_BYTES", 1200)  # 100 rows per swap chunk
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 3)).astype(np.float32)
    groups = [rng.choice(20000, 9000, replace=False)]
    groups.append(rng.choice(np.setdiff1d(np.arange(20000), groups[0]), 1000, replace=False))
    original, moved = x.copy(), torch.tensor(x) if as_tensor else x
    source = move_rows_to_front(moved, groups)
    moved = np.asarray(moved)
    assert np.array_equal(moved, original[source])  # a permutation, described by `source`
    assert sorted(source) == list(range(20000))
    assert set(source[:9000]) == set(groups[0]) and set(source[9000:10000]) == set(groups[1])


def test_a_grid_of_one_l2_is_that_l2_without_a_hold_out():
    """One image per class cannot be split into fit and hold-out; a one-value grid needs no split
    and fits exactly what l2=that value fits."""
    x, y = blobs(40, 8, 10, separation=1.0, seed=3)
    one_per_class = np.sort(np.unique(y[:30], return_index=True)[1])
    x_tr, y_tr = x[one_per_class], y[one_per_class]
    with pytest.raises(AnalysisError, match="too small to hold out"):
        fit_probe(x_tr, y_tr, x[30:], y[30:], l2_grid=(1e-2, 1e-1))
    result = fit_probe(x_tr, y_tr, x[30:], y[30:], l2_grid=(1e-2,))
    assert result.l2 == 1e-2 and np.isnan(result.val_acc)
    given = fit_probe(x_tr, y_tr, x[30:], y[30:], l2=1e-2)
    assert dataclasses.replace(result, val_acc=0.0) == dataclasses.replace(given, val_acc=0.0)


def _cross_entropy(model, x, y):
    return -np.mean(np.log(model.predict_proba(x)[np.arange(len(y)), y]))


@pytest.mark.parametrize("backend", ["torch", "sklearn"])
@pytest.mark.parametrize("selection_rows", [None, 300])
def test_the_chosen_l2_has_the_lowest_held_out_cross_entropy(backend, selection_rows):
    """Recomputed independently: sklearn fits on the hold-out split of the standardised train
    split, one per grid point; the grid is built so that the best point is an inner one."""
    x, y = blobs(700, 60, 3, separation=0.25, seed=2)
    grid = (1.0, 1e-2, 1e-4)
    result = fit_probe(*split(x, y, 500), backend=backend, l2_grid=grid, selection_rows=selection_rows)
    x_std = _standardised(x[:500])
    fit_idx, val_idx = selection_split(y[:500], 0.1, selection_rows, seed=0)
    losses, accs = [], []
    for l2 in grid:
        model = LogisticRegression(C=1 / (l2 * len(fit_idx)), tol=1e-8, max_iter=5000).fit(x_std[fit_idx], y[fit_idx])
        losses.append(_cross_entropy(model, x_std[val_idx], y[val_idx]))
        accs.append(model.score(x_std[val_idx], y[val_idx]))
    best = int(np.argmin(losses))
    assert best == 1  # an inner grid point, so the test tells a right choice from an edge
    assert result.l2 == grid[best]
    assert result.val_acc == pytest.approx(accs[best], abs=1.5 / len(val_idx))  # one row may flip
    assert np.isnan(fit_probe(*split(x, y, 500), l2=1e-2).val_acc)


@pytest.mark.parametrize("backend", ["torch", "sklearn"])
def test_the_l2_path_stops_once_the_held_out_loss_rises(monkeypatch, backend):
    """Same data as above (held-out minimum at 1e-2): the path runs strong to weak whatever the
    grid's order, fits 1e-4, finds it worse and never fits 1e-6; then the refit on all 500 rows."""
    x, y = blobs(700, 60, 3, separation=0.25, seed=2)
    solver = TorchLBFGS if backend == "torch" else probe_solvers.SklearnLBFGS
    real_fit, fitted = solver.fit, []

    def recording_fit(self, x, y, l2, init=None):
        fitted.append((len(x), l2))
        return real_fit(self, x, y, l2, init)

    monkeypatch.setattr(solver, "fit", recording_fit)
    result = fit_probe(*split(x, y, 500), backend=backend, l2_grid=(1e-4, 1.0, 1e-6, 1e-2))
    assert result.l2 == 1e-2
    assert [l2 for _, l2 in fitted] == [1.0, 1e-2, 1e-4, 1e-2]
    assert [rows for rows, _ in fitted][-1] == 500 > fitted[0][0]


def test_bootstrap_interval_matches_the_binomial_quantiles():
    """Resampling n Bernoulli outcomes with mean p gives Binomial(n, p)/n exactly, so with many
    resamples the percentile interval is its quantiles (close to p -+ 1.96 sqrt(p(1-p)/n))."""
    n, p = 400, 0.8
    correct = np.arange(n) < p * n
    lo, hi = bootstrap_interval(correct, 20000, 0.95, seed=0)
    exact = stats.binom.ppf([0.025, 0.975], n, p) / n
    assert lo == pytest.approx(exact[0], abs=1.01 / n) and hi == pytest.approx(exact[1], abs=1.01 / n)
    half = 1.96 * np.sqrt(p * (1 - p) / n)
    assert lo == pytest.approx(p - half, abs=0.006) and hi == pytest.approx(p + half, abs=0.006)
    narrow = bootstrap_interval(correct, 20000, 0.5, seed=0)
    assert lo < narrow[0] < p < narrow[1] < hi
    assert bootstrap_interval(correct, 1000, 0.95, seed=3) == bootstrap_interval(correct, 1000, 0.95, seed=3)
    assert bootstrap_interval(np.ones(50, bool), 100, 0.95, seed=0) == (1.0, 1.0)


@pytest.mark.parametrize("backend", ["torch", "sklearn"])
def test_test_accuracy_interval_resamples_the_probes_per_image_correctness(backend):
    x, y = blobs(900, 20, 4, separation=0.35, seed=5)
    data = split(x, y, 600)
    result = fit_probe(*data, backend=backend, l2=1e-2, n_bootstrap=2000, ci_level=0.9, seed=7)
    x_std = _standardised(x[:600])
    test_std = (x[600:] - x[:600].mean(0)) / x[:600].std(0)
    model = LogisticRegression(C=1 / (1e-2 * 600), tol=1e-8, max_iter=5000).fit(x_std, y[:600])
    correct = model.predict(test_std) == y[600:]
    assert result.test_acc == pytest.approx(correct.mean(), abs=2 / 300)
    if result.test_acc == correct.mean():  # same per-image correctness: the very same interval
        assert (result.test_acc_lo, result.test_acc_hi) == bootstrap_interval(correct, 2000, 0.9, seed=7)
    assert result.test_acc_lo < result.test_acc < result.test_acc_hi
    assert result.test_acc_hi - result.test_acc_lo == pytest.approx(
        2 * 1.645 * np.sqrt(result.test_acc * (1 - result.test_acc) / 300), rel=0.15
    )


def test_library_defaults_are_the_config_defaults():
    """One source of truth: fit_probe's defaults are DEFAULTS['probes'], and every key of the
    config's probes section is a keyword fit_probe takes (the rule passes the section whole)."""
    params = inspect.signature(fit_probe).parameters
    for key, value in DEFAULTS["probes"].items():
        assert key in params, key
        assert params[key].default == (tuple(value) if isinstance(value, list) else value), key


def test_bad_knobs_and_single_class_raise():
    x, y = blobs(100, 4, 2, separation=1.0)
    with pytest.raises(ConfigError, match="backend"):
        fit_probe(*split(x, y, 80), backend="saga")
    with pytest.raises(ConfigError, match="l2"):
        fit_probe(*split(x, y, 80), l2=-1.0)
    with pytest.raises(AnalysisError, match="2 classes"):
        fit_probe(x[:50], np.zeros(50, dtype=int), x[50:], y[50:])


LAYERS = [
    ("conv1", "trunk", 0, 0, 0, (3, 4, 4)),
    ("conv2", "trunk", 1, 0, 0, (4, 4, 4)),
    ("fc", "trunk", 2, 0, 0, (6,)),
]


def test_probe_table_has_one_row_per_probe_point(tmp_path):
    path = write_activations(tmp_path / "activations.h5", 240, 120, LAYERS, num_classes=4)
    table = probe_table(path, progress=False, l2_grid=(1e-1, 1e-2))
    assert list(table["probe_point"]) == ["conv1", "conv2", "fc"]
    assert list(table["n_features"]) == [48, 64, 6]
    for column in ("train_acc", "test_acc", "l2", "converged", "n_iter", "backend", "stage", "pathway"):
        assert column in table.columns
    assert table["converged"].all() and (table["backend"] == "torch").all()
    # the fixture's label signal grows with depth, and so must the probe accuracy
    assert table["test_acc"].is_monotonic_increasing and table["test_acc"].iloc[-1] > 0.9
    assert ((table["test_acc_lo"] <= table["test_acc"]) & (table["test_acc"] <= table["test_acc_hi"])).all()
    assert (table["test_acc_hi"] - table["test_acc_lo"]).iloc[0] > 0.05  # 120 test images: a wide interval
    pd.testing.assert_frame_equal(table, probe_table(path, progress=False, l2_grid=(1e-1, 1e-2)))  # seeded


def test_rank_deficient_features_like_dead_relus_still_fit():
    """Half the units dead (constant) and the rest copies of 3 directions: the sketch of the
    preconditioner is degenerate, the fit must still converge to a sensible probe."""
    x, y = blobs(400, 3, 3, separation=3.0)
    x = np.concatenate([np.repeat(x, 30, axis=1), np.zeros((400, 90))], axis=1).astype(np.float32)
    result = fit_probe(*split(x, y, 300), l2=1e-2)
    assert result.converged and result.test_acc > 0.8
