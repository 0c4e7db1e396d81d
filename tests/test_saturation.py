"""Saturation, the streaming covariance and the saturation stage table (analysis/saturation.py)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from h5fixtures import write_activations

from flowprobe.analysis.saturation import (
    CovarianceAccumulator,
    channelwise,
    intrinsic_dimension,
    saturation,
    saturation_table,
)
from flowprobe.errors import ActivationFileError, AnalysisError, ConfigError

# eigenvalues summing to 100: P_k = .50 .80 .90 .95 .99 .995 .998 1
SPECTRUM = np.array([50.0, 30.0, 10.0, 5.0, 4.0, 0.5, 0.3, 0.2])


def with_spectrum(eigvals: np.ndarray, n: int = 400, seed: int = 0) -> np.ndarray:
    """Samples whose sample covariance has exactly `eigvals` (in a random rotated basis)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, len(eigvals)))
    q, _ = np.linalg.qr(z - z.mean(0))  # orthonormal, zero-mean columns
    rotation, _ = np.linalg.qr(rng.normal(size=(len(eigvals),) * 2))
    return np.sqrt(n - 1) * q * np.sqrt(eigvals) @ rotation.T + 5.0


def test_the_constructed_data_has_the_chosen_spectrum():
    eig = np.linalg.eigvalsh(np.cov(with_spectrum(SPECTRUM), rowvar=False))
    np.testing.assert_allclose(np.sort(eig)[::-1], SPECTRUM, atol=1e-9)


@pytest.mark.parametrize(
    "delta, textbook, delve",
    [(0.97, 5, 4), (0.85, 3, 2), (0.45, 1, 0), (0.999, 8, 7)],
)
def test_saturation_of_a_known_spectrum_for_both_k_rules(delta, textbook, delve):
    x = with_spectrum(SPECTRUM)
    assert saturation(x, delta=delta) == pytest.approx(textbook / 8)
    assert saturation(x, delta=delta, k_rule="delve") == pytest.approx(delve / 8)


def test_k_rules_at_an_exact_tie_with_delta():
    eigvals = [0.25, 0.5, 0.25]  # any order; P = .5, .75, 1 exactly in binary floating point
    assert intrinsic_dimension(eigvals, 0.75, "textbook") == 2  # smallest k with P_k >= delta
    assert intrinsic_dimension(eigvals, 0.75, "delve") == 2  # argmax(P > delta) = index 2
    assert intrinsic_dimension(eigvals, 0.7, "delve") == 1


def test_saturation_accepts_torch_tensors():
    x = with_spectrum(SPECTRUM)
    assert saturation(torch.tensor(x, dtype=torch.float32), 0.97) == saturation(x, 0.97)


def test_zero_variance_and_bad_knobs_raise():
    with pytest.raises(AnalysisError, match="constant"):
        saturation(np.ones((10, 3)))
    with pytest.raises(ConfigError, match="k_rule"):
        intrinsic_dimension([1.0, 2.0], 0.9, "median")
    with pytest.raises(ConfigError, match="delta"):
        intrinsic_dimension([1.0, 2.0], 1.0)


def naive_covariance(x: np.ndarray) -> np.ndarray:
    """The formula delve's docs state: sum x x^T / n - mu mu^T (then n/(n-1) for ddof=1)."""
    n = len(x)
    mean = x.sum(0) / n
    return (x.T @ x / n - np.outer(mean, mean)) * n / (n - 1)


@pytest.mark.parametrize("offset", [0.0, 1e6])
def test_accumulator_merged_over_batches_equals_numpy_cov(offset):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1000, 6)) @ rng.normal(size=(6, 6)) + offset
    first, second = CovarianceAccumulator(), CovarianceAccumulator()
    for rows in np.array_split(np.arange(600), 7):  # uneven batches
        first.update(x[rows])
    for rows in np.array_split(np.arange(600, 1000), 3):
        second.update(torch.tensor(x[rows]))
    merged = first.merge(second)
    reference = np.cov(x, rowvar=False)
    assert merged.n == 1000
    np.testing.assert_allclose(merged.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(merged.covariance(), reference, rtol=0, atol=1e-10 * np.abs(reference).max())
    if offset:  # the raw-moment formula loses the variance to cancellation at this offset
        assert np.abs(naive_covariance(x) - reference).max() > 1e-6 * np.abs(reference).max()


def test_accumulator_rejects_mismatched_widths_and_tiny_samples():
    acc = CovarianceAccumulator().update(np.zeros((3, 2)))
    with pytest.raises(AnalysisError, match="width"):
        acc.update(np.zeros((3, 4)))
    with pytest.raises(AnalysisError, match="more than 1"):
        CovarianceAccumulator().update(np.zeros((1, 2))).covariance()


def test_channelwise_makes_every_spatial_position_a_sample():
    maps = np.arange(2 * 3 * 2 * 2).reshape(2, 3, 2, 2)  # [N, C, H, W]
    samples = channelwise(maps.reshape(2, -1), (3, 2, 2))
    expected = [[maps[n, :, h, w] for h in range(2) for w in range(2)] for n in range(2)]
    np.testing.assert_array_equal(samples, np.reshape(expected, (-1, 3)))
    np.testing.assert_array_equal(channelwise(torch.tensor(maps.reshape(2, -1)), (3, 2, 2)).numpy(), samples)
    vectors = np.ones((4, 5))
    assert channelwise(vectors, (5,)) is vectors


LAYERS = [
    ("conv1", "trunk", 0, 0, 0, (6, 4, 4)),
    ("conv2", "trunk", 1, 0, 0, (9, 4, 4)),
    ("fc", "trunk", 2, 0, 0, (5,)),
]


@pytest.fixture(scope="module")
def h5_path(tmp_path_factory):
    return write_activations(tmp_path_factory.mktemp("sat") / "activations.h5", 50, 20, LAYERS, num_classes=3)


@pytest.mark.parametrize("k_rule", ["textbook", "delve"])
def test_saturation_table_streams_the_whole_split(h5_path, k_rule):
    table = saturation_table(h5_path, delta=0.9, k_rule=k_rule, source="postrelu_avgpool4", batch_size=8)
    assert list(table["probe_point"]) == ["conv1", "conv2", "fc"]
    assert list(table["n_features"]) == [6, 9, 5]
    assert list(table["n_samples"]) == [50 * 16, 50 * 16, 50]
    with h5py.File(h5_path) as h5:
        for row, (name, *_, shape) in zip(table.itertuples(), LAYERS):
            samples = channelwise(h5[f"layers/{name}/train"][...], shape)
            assert row.saturation == saturation(samples, 0.9, k_rule)
            assert row.intrinsic_dim == round(row.saturation * row.n_features)
    assert (table["k_rule"] == k_rule).all() and (table["delta"] == 0.9).all()
    assert (table["source"] == "postrelu_avgpool4").all()
    assert table["saturation"].between(0, 1).all() and table["saturation"].lt(1).any()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_prebn_source_reads_the_prebn_maps_and_names_its_fallbacks(tmp_path, dtype):
    """conv1 and fc have pre-BN maps, conv2 (like an add point) has none and falls back."""
    path = write_activations(tmp_path / "a.h5", 50, 20, LAYERS, num_classes=3, prebn=("conv1", "fc"), dtype=dtype)
    table = saturation_table(path, delta=0.9, source="prebn_nearest4", batch_size=16).set_index("probe_point")
    post = saturation_table(path, delta=0.9, source="postrelu_avgpool4").set_index("probe_point")
    assert list(table["source"]) == ["prebn_nearest4", "postrelu_avgpool4", "prebn_nearest4"]
    with h5py.File(path) as h5:
        for name, *_, shape in LAYERS:
            group = "prebn" if name in ("conv1", "fc") else "layers"
            samples = channelwise(h5[f"{group}/{name}/train"][...].astype(np.float64), shape)
            assert table.loc[name, "saturation"] == saturation(samples, 0.9), name
    assert table.loc["conv2", "saturation"] == post.loc["conv2", "saturation"]
    # isotropic pre-BN noise needs more components than the class-coded layer
    assert table.loc["conv1", "saturation"] > post.loc["conv1", "saturation"]


def test_prebn_source_on_a_dump_without_prebn_says_what_to_do(h5_path):
    with pytest.raises(ActivationFileError, match="rerun the activations rule.*postrelu_avgpool4"):
        saturation_table(h5_path, source="prebn_nearest4")
    with pytest.raises(ConfigError, match="source 'pre' is unknown"):
        saturation_table(h5_path, source="pre")


def test_saturation_table_names_a_dead_layer(tmp_path):
    path = write_activations(tmp_path / "a.h5", 20, 8, LAYERS, num_classes=2)
    with h5py.File(path, "r+") as h5:
        h5["layers/conv2/train"][...] = 0.0
    with pytest.raises(AnalysisError, match="conv2"):
        saturation_table(path, source="postrelu_avgpool4")
