"""Linear CKA, debiased CKA, MinibatchCKA and the CKA stage tables (analysis/cka.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from h5fixtures import write_activations

from flowprobe.analysis.cka import MinibatchCKA, cka_output_table, cka_pathway_table, linear_cka
from flowprobe.errors import AnalysisError

RNG = np.random.default_rng(0)


def correlated(n: int, dx: int, dy: int, rng=RNG) -> tuple[np.ndarray, np.ndarray]:
    shared = rng.normal(size=(n, 4))
    x = shared @ rng.normal(size=(4, dx)) + 0.5 * rng.normal(size=(n, dx)) + 3.0
    y = shared @ rng.normal(size=(4, dy)) + 0.5 * rng.normal(size=(n, dy)) - 7.0
    return x, y


# --- independent Gram-form references (written from the papers, not from cka.py) ---

def hsic_gram(k: np.ndarray, l: np.ndarray) -> float:
    """Kornblith 2019 eq. 3: tr(K H L H) / (n-1)^2, H = I - 11^T/n."""
    n = len(k)
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def hsic1_gram(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. 2012 unbiased HSIC_1, written term by term with zero-diagonal Grams."""
    n = len(k)
    kt, lt = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    one = np.ones(n)
    value = np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
    value -= 2 / (n - 2) * one @ kt @ lt @ one
    return value / (n * (n - 3))


def cka_gram(x: np.ndarray, y: np.ndarray, hsic) -> float:
    k, l = x @ x.T, y @ y.T
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


# --- linear_cka ---

@pytest.mark.parametrize("debiased", [False, True])
def test_cka_of_a_representation_with_itself_is_one(debiased):
    x, _ = correlated(50, 7, 3)
    assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_is_invariant_to_orthogonal_maps_and_isotropic_scaling(debiased):
    x, y = correlated(60, 6, 5)
    q, _ = np.linalg.qr(RNG.normal(size=(5, 5)))
    reference = linear_cka(x, y, debiased=debiased)
    assert linear_cka(x, 4.5 * y @ q, debiased=debiased) == pytest.approx(reference, abs=1e-12)
    assert linear_cka(0.01 * x, y, debiased=debiased) == pytest.approx(reference, abs=1e-12)


def test_cka_is_not_invariant_to_anisotropic_scaling():
    x, y = correlated(60, 6, 5)
    stretch = np.diag([1.0, 1.0, 1.0, 1.0, 50.0])
    assert abs(linear_cka(x, y @ stretch) - linear_cka(x, y)) > 1e-3


@pytest.mark.parametrize("n, dx, dy", [(40, 5, 3), (12, 30, 25)])  # feature-space and Gram paths
def test_feature_space_form_equals_gram_form(n, dx, dy):
    x, y = correlated(n, dx, dy)
    assert linear_cka(x, y) == pytest.approx(cka_gram(x, y, hsic_gram), abs=1e-10)
    # the unbiased HSIC_1 is shift invariant: the reference uses the raw, uncentred features
    assert linear_cka(x, y, debiased=True) == pytest.approx(cka_gram(x, y, hsic1_gram), abs=1e-10)


def test_torch_and_float32_inputs_give_the_float64_result():
    x, y = correlated(40, 5, 3)
    expected = linear_cka(x, y)
    assert linear_cka(torch.tensor(x), torch.tensor(y)) == pytest.approx(expected, abs=1e-12)
    assert linear_cka(x.astype(np.float32), y.astype(np.float32)) == pytest.approx(expected, abs=1e-5)


def test_nan_and_constant_inputs_raise():
    x, y = correlated(30, 4, 4)
    x[3, 1] = np.nan
    with pytest.raises(AnalysisError, match="NaN"):
        linear_cka(x, y)
    with pytest.raises(AnalysisError, match="constant"):
        linear_cka(np.ones((30, 4)), y)


def test_mismatched_rows_raise():
    x, y = correlated(30, 4, 4)
    with pytest.raises(AnalysisError, match="same rows"):
        linear_cka(x, y[:20])


# --- MinibatchCKA ---

def test_minibatch_cka_with_one_batch_equals_debiased_cka():
    x, y = correlated(64, 8, 6)
    mcka = MinibatchCKA(1, 1)
    mcka.update([x], [y])
    assert mcka.compute()[0, 0] == pytest.approx(linear_cka(x, y, debiased=True), abs=1e-10)


def test_minibatch_cka_all_pairs_equal_a_per_pair_song_computation():
    rng = np.random.default_rng(1)
    layers = [correlated(80, d, d, rng)[0] for d in (3, 5, 7)]
    mcka = MinibatchCKA(3, 2)
    batches = np.array_split(np.arange(80), 4)
    for rows in batches:
        mcka.update([f[rows] for f in layers], [layers[2][rows] * 2, layers[0][rows] + 1])
    targets = [layers[2] * 2, layers[0] + 1]
    expected = np.empty((3, 2))
    for i, a in enumerate(layers):
        for j, b in enumerate(targets):
            sums = np.zeros(3)
            for rows in batches:
                k, l = a[rows] @ a[rows].T, b[rows] @ b[rows].T
                sums += [hsic1_gram(k, l), hsic1_gram(k, k), hsic1_gram(l, l)]
            expected[i, j] = sums[0] / np.sqrt(sums[1] * sums[2])
    np.testing.assert_allclose(mcka.compute(), expected, atol=1e-10)
    assert mcka.compute()[2, 0] == pytest.approx(1.0, abs=1e-12)


def test_minibatch_cka_over_many_batches_approximates_the_full_data_value():
    x, y = correlated(3000, 10, 8, np.random.default_rng(2))
    mcka = MinibatchCKA(1, 1)
    for rows in np.array_split(np.random.default_rng(3).permutation(3000), 30):
        mcka.update([torch.tensor(x[rows])], [y[rows]])
    assert mcka.compute()[0, 0] == pytest.approx(linear_cka(x, y, debiased=True), abs=0.01)


def test_minibatch_cka_without_y_layers_is_a_symmetric_self_similarity():
    x, y = correlated(40, 5, 4)
    mcka = MinibatchCKA(2)
    mcka.update([x, y])
    cka = mcka.compute()
    assert cka.shape == (2, 2)
    np.testing.assert_allclose(np.diag(cka), 1.0, atol=1e-12)
    assert cka[0, 1] == pytest.approx(cka[1, 0], abs=1e-12)


def test_minibatch_cka_names_the_faulty_layer():
    x, y = correlated(20, 4, 4)
    mcka = MinibatchCKA(2, 1, names_x=["conv1", "conv2"], names_y=["dead"])
    mcka.update([x, y], [np.zeros((20, 3))])
    with pytest.raises(AnalysisError, match=r"conv1, dead"):
        mcka.compute()
    bad = x.copy()
    bad[0, 0] = np.inf
    with pytest.raises(AnalysisError, match="conv2"):
        mcka.update([x, bad], [y])


def test_minibatch_cka_rejects_tiny_batches_and_wrong_layer_counts():
    x, y = correlated(20, 4, 4)
    mcka = MinibatchCKA(1, 1)
    with pytest.raises(AnalysisError, match="at least 4 rows"):
        mcka.update([x[:3]], [y[:3]])
    with pytest.raises(AnalysisError, match="expects 1 x and 1 y"):
        mcka.update([x, x], [y])
    with pytest.raises(AnalysisError, match="before any update"):
        mcka.compute()


# --- stage tables on a fabricated activations.h5 ---

LAYERS = [
    ("stem", "trunk", 0, 0, 0, (6, 4, 4)),
    ("s1b0.min0", "min", 1, 0, 0, (4, 4, 4)),
    ("s1b0.max0", "max", 1, 0, 0, (4, 4, 4)),
    ("s1b0.max1", "max", 1, 0, 1, (5, 4, 4)),
    ("s1b0.add", "trunk", 1, 0, 2, (4, 4, 4)),
    ("s2b0.min0", "min", 2, 0, 0, (3, 4, 4)),
    ("s2b0.min1", "min", 2, 0, 1, (3, 4, 4)),
    ("s2b0.max0", "max", 2, 0, 0, (3, 4, 4)),
    ("fc", "trunk", 3, 0, 0, (7,)),
]


@pytest.fixture(scope="module")
def h5_path(tmp_path_factory):
    return write_activations(tmp_path_factory.mktemp("cka") / "activations.h5", 60, 48, LAYERS, num_classes=3)


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_output_table_streams_the_exact_value(h5_path, debiased):
    import h5py

    table = cka_output_table(h5_path, debiased=debiased, batch_size=7)
    assert list(table["probe_point"]) == [layer[0] for layer in LAYERS]
    with h5py.File(h5_path) as h5:
        logits = h5["output/test"][...]
        expected = [linear_cka(h5[f"layers/{name}/test"][...], logits, debiased) for name, *_ in LAYERS]
    np.testing.assert_allclose(table["cka"], expected, atol=1e-10)
    assert table["debiased"].eq(debiased).all()


def test_cka_pathway_table_defaults_to_the_last_block_with_both_pathways(h5_path):
    table = cka_pathway_table(h5_path, batch_size=12)
    assert set(table["stage"]) == {2} and set(table["block"]) == {0}
    assert list(zip(table["layer_a"], table["layer_b"])) == [("s2b0.min0", "s2b0.max0"), ("s2b0.min1", "s2b0.max0")]
    assert list(table.columns) == [
        "layer_a", "layer_b", "position_a", "position_b", "pathway_a", "pathway_b", "stage", "block", "cka",
        "debiased",
    ]
    assert table["cka"].between(-1, 1).all()


def test_cka_pathway_table_equals_minibatch_cka_on_the_same_batches(h5_path):
    import h5py

    table = cka_pathway_table(h5_path, stage=1, block=0, pathways=("max", "min"), batch_size=16, seed=5,
                              debiased=True)
    rows = np.array_split(np.random.default_rng(5).permutation(48), 3)
    mcka = MinibatchCKA(2, 1)
    with h5py.File(h5_path) as h5:
        for r in rows:
            r = np.sort(r)
            mcka.update([h5[f"layers/s1b0.max{i}/test"][r] for i in (0, 1)], [h5["layers/s1b0.min0/test"][r]])
    np.testing.assert_allclose(table["cka"], mcka.compute().ravel(), atol=1e-12)


def test_biased_minibatch_cka_with_one_batch_is_the_exact_biased_cka():
    x, y = correlated(40, 6, 5)
    mcka = MinibatchCKA(1, 1, debiased=False)
    mcka.update([x], [y])
    assert mcka.compute()[0, 0] == pytest.approx(cka_gram(x - x.mean(0), y - y.mean(0), hsic_gram), abs=1e-12)


def test_cka_pathway_table_honours_debiased(h5_path):
    import h5py

    kw = dict(stage=1, block=0, pathways=("max", "min"), batch_size=48)  # one batch: every test row
    biased, debiased = (cka_pathway_table(h5_path, debiased=d, **kw) for d in (False, True))
    assert not biased["debiased"].any() and debiased["debiased"].all()
    with h5py.File(h5_path) as h5:
        x = [h5[f"layers/s1b0.max{i}/test"][...] for i in (0, 1)]
        y = h5["layers/s1b0.min0/test"][...]
    np.testing.assert_allclose(biased["cka"], [linear_cka(xi, y, debiased=False) for xi in x], atol=1e-12)
    np.testing.assert_allclose(debiased["cka"], [linear_cka(xi, y, debiased=True) for xi in x], atol=1e-12)
    # unrelated random features: the biased estimator is inflated at 48 rows, HSIC_1 is not
    assert (biased["cka"] - debiased["cka"]).abs().min() > 0.02


def test_cka_pathway_table_lists_what_exists_when_pathways_are_missing(h5_path):
    with pytest.raises(AnalysisError, match=r"stage 1 block 0: max,min,trunk"):
        cka_pathway_table(h5_path, pathways=("p0", "p1"))
    with pytest.raises(AnalysisError, match="stage=3"):
        cka_pathway_table(h5_path, stage=3)


def test_pathway_heatmap_defaults_to_p0_p1_for_identical_kernels(tmp_path):
    layers = [("stem", "trunk", -1, -1, 0, (4, 4, 4))]
    layers += [(f"s0.b0.{p}.{i}", p, 0, 0, i, (4, 4, 4)) for p in ("p0", "p1") for i in range(2)]
    layers += [("s0.b0.add", "trunk", 0, 0, 1, (4, 4, 4))]
    path = write_activations(tmp_path / "a.h5", 64, 64, layers)
    table = cka_pathway_table(path, batch_size=16)
    assert set(table["pathway_a"]) == {"p0"} and set(table["pathway_b"]) == {"p1"} and len(table) == 4
    with pytest.raises(AnalysisError, match="min"):
        cka_pathway_table(path, pathways=("min", "max"))
