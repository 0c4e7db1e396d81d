"""Linear probes: both backends, the l2 <-> C mapping, l2 selection, probe_table (analysis/probes.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from h5fixtures import write_activations
from sklearn.linear_model import LogisticRegression

from flowprobe.analysis.probes import ProbeResult, fit_probe, objective, probe_table, stratified_split
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


def test_objective_gradient_matches_autograd():
    x, y = blobs(50, 6, 3, separation=1.0)
    x, y = torch.tensor(x / 100), torch.tensor(y)
    w = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(x @ w.T + b, y) + 0.5 * 0.1 * (w**2).sum()
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


def test_constant_features_torch_inputs_and_unseen_test_classes():
    x, y = blobs(300, 6, 3, separation=3.0)
    x[:, 2] = 7.0  # constant: standardised to 0, not NaN
    y_test = y[200:].copy()
    y_test[:5] = 9  # a class the train split never saw counts as wrong
    result = fit_probe(torch.tensor(x[:200]), torch.tensor(y[:200]), torch.tensor(x[200:]), y_test, l2=1e-2)
    assert np.isfinite(result.train_acc) and result.test_acc <= 0.95 + 1e-12


def test_stratified_split_holds_out_every_class():
    y = np.repeat([0, 1, 2], [50, 30, 2])
    fit_idx, val_idx = stratified_split(y, 0.1, seed=0)
    assert sorted(np.concatenate([fit_idx, val_idx])) == list(range(len(y)))
    assert list(np.bincount(y[val_idx])) == [5, 3, 1]
    assert np.array_equal(stratified_split(y, 0.1, seed=0)[1], val_idx)


def test_l2_selection_reports_the_held_out_accuracy():
    x, y = blobs(500, 10, 3, separation=0.6)
    result = fit_probe(*split(x, y, 400), l2_grid=(1e-1, 1e-3))
    assert result.l2 in (1e-1, 1e-3) and 0 < result.val_acc <= 1
    assert np.isnan(fit_probe(*split(x, y, 400), l2=1e-2).val_acc)


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


def test_rank_deficient_features_like_dead_relus_still_fit():
    """Half the units dead (constant) and the rest copies of 3 directions: the sketch of the
    preconditioner is degenerate, the fit must still converge to a sensible probe."""
    x, y = blobs(400, 3, 3, separation=3.0)
    x = np.concatenate([np.repeat(x, 30, axis=1), np.zeros((400, 90))], axis=1).astype(np.float32)
    result = fit_probe(*split(x, y, 300), l2=1e-2)
    assert result.converged and result.test_acc > 0.8
