"""Layer saturation (Richter et al. 2020; the `delve` library), docs/design.md §5.

For a layer's samples x_i in R^D: the covariance Q = 1/(n-1) sum_i (x_i - mu)(x_i - mu)^T,
its eigenvalues lam_1 >= ... >= lam_D, the cumulative explained variance
P_k = sum_{i<=k} lam_i / sum_i lam_i, the intrinsic dimension k(delta) and
saturation = k(delta) / D. Conv maps are treated channelwise: every spatial position of a
(C, H, W) map is a sample of C features, so D = C.

Two sources of the maps (config `saturation.source`, column `source` of the table):
- 'prebn_nearest4', the study's: the unit's conv (or linear) output before BN and the
  nonlinearity, resized to 4x4 by nearest neighbour (stored as /prebn by the dump).
  A ResNet add point uses its branch's second conv, a DenseNet concatenation its new-feature
  conv (flowprobe.activations.prebn_modules). Points with no conv/linear layer of their own
  (MPNet add merges, the MLP's add) have no such output; their row falls back to
  'postrelu_avgpool4' and says so in `source`.
- 'postrelu_avgpool4': the stored probe-point maps, adaptive-average-pooled to 4x4 after
  the unit's nonlinearity (what the probes see).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from flowprobe import h5io
from flowprobe.config import DEFAULTS
from flowprobe.errors import ActivationFileError, AnalysisError, ConfigError

K_RULES = ("textbook", "delve")
_D = DEFAULTS["saturation"]  # the one place of the saturation defaults
SOURCES = ("prebn_nearest4", "postrelu_avgpool4")
GROUP_SOURCE = {"prebn": "prebn_nearest4", "layers": "postrelu_avgpool4"}  # activations.h5 group → source


class CovarianceAccumulator:
    """Streaming mean and covariance in float64 (Chan, Golub & LeVeque 1979 pairwise update).

    A part holds (n, mean, M2) with M2 = sum_i (x_i - mean)(x_i - mean)^T. Two parts merge as
        n = n_a + n_b,  d = mean_b - mean_a,  mean = mean_a + d n_b / n,
        M2 = M2_a + M2_b + d d^T n_a n_b / n,
    so no step subtracts two large raw moments (sum x x^T / n - mu mu^T loses every digit of
    the variance once |mu| >> std).
    """

    def __init__(self):
        self.n = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def update(self, batch) -> "CovarianceAccumulator":
        """Add the rows of `batch` [b, D] (numpy or torch)."""
        x = _as_float64(batch)
        if x.ndim != 2:
            raise AnalysisError(f"covariance batch must be [rows, features], got shape {x.shape}")
        if len(x) == 0:
            return self
        mean = x.mean(0)
        centred = x - mean
        return self._combine(len(x), mean, centred.T @ centred)

    def merge(self, other: "CovarianceAccumulator") -> "CovarianceAccumulator":
        """Fold another accumulator (e.g. of another shard) into this one."""
        if other.n:
            self._combine(other.n, other.mean, other.m2)
        return self

    def _combine(self, n_b: int, mean_b: np.ndarray, m2_b: np.ndarray) -> "CovarianceAccumulator":
        if self.n == 0:
            self.n, self.mean, self.m2 = n_b, mean_b.copy(), m2_b.copy()
            return self
        if mean_b.shape != self.mean.shape:
            raise AnalysisError(f"covariance batches disagree in width: {mean_b.shape[0]} vs {self.mean.shape[0]}")
        n = self.n + n_b
        delta = mean_b - self.mean
        self.m2 += m2_b + np.outer(delta, delta) * (self.n * n_b / n)
        self.mean += delta * (n_b / n)
        self.n = n
        return self

    def covariance(self, ddof: int = 1) -> np.ndarray:
        """M2 / (n - ddof): the unbiased sample covariance by default (as numpy.cov)."""
        if self.n - ddof <= 0:
            raise AnalysisError(f"covariance needs more than {ddof} sample(s), got {self.n}")
        return self.m2 / (self.n - ddof)


def intrinsic_dimension(eigvals, delta: float = _D["delta"], k_rule: str = _D["k_rule"]) -> int:
    """Number of principal components that explain a fraction `delta` of the variance.

    'textbook': the smallest k with P_k >= delta.
    'delve': what delve's `get_explained_variance` returns, `np.argmax(P > delta)` on the
    0-based array of P_1..P_D, i.e. (smallest k with P_k > delta) - 1: one less than the
    textbook k unless some P_k equals delta exactly; it is 0 when the first component alone
    explains more than delta, so delve's saturation can be 0.
    """
    _check_rule(delta, k_rule)
    lam = np.sort(np.asarray(eigvals, dtype=np.float64))[::-1]
    total = lam.sum()
    if not (total > 0 and math.isfinite(total)):
        raise AnalysisError(
            f"total variance is {total}: the features are constant or not finite, so saturation is undefined"
        )
    explained = np.cumsum(lam) / total
    if k_rule == "delve":
        return int(np.argmax(explained > delta))
    reached = explained >= delta
    # P_D = 1 > delta up to rounding; should rounding leave every P_k below delta, all D are needed
    return int(np.argmax(reached)) + 1 if reached.any() else len(lam)


def saturation(x, delta: float = _D["delta"], k_rule: str = _D["k_rule"]) -> float:
    """idim / D for samples x [N, D] (numpy or torch); conv maps go through `channelwise` first."""
    x = _as_float64(x)
    cov = CovarianceAccumulator().update(x).covariance()
    return intrinsic_dimension(np.linalg.eigvalsh(cov), delta, k_rule) / x.shape[1]


def channelwise(x, shape: tuple[int, ...]):
    """[N, C*H*W] rows of flattened (C, H, W) maps -> [N*H*W, C] samples (numpy or torch).
    A vector shape (D,) returns x unchanged."""
    if len(shape) == 1:
        return x
    c, h, w = shape
    maps = x.reshape(len(x), c, h * w)
    maps = maps.transpose(1, 2) if isinstance(maps, torch.Tensor) else maps.transpose(0, 2, 1)
    return maps.reshape(-1, c)


def saturation_table(
    h5_path,
    *,
    delta: float = _D["delta"],
    k_rule: str = _D["k_rule"],
    split: str = _D["split"],
    source: str = _D["source"],
    batch_size: int = 2048,
) -> pd.DataFrame:
    """One row per probe point: point_frame columns + saturation, intrinsic_dim, n_features,
    delta, k_rule, n_samples (covariance rows: N*H*W for maps), source (the maps used, see
    the module docstring). Streams `batch_size` rows.

    Args:
        h5_path: activations.h5 of one run.
        delta: explained-variance fraction that defines the intrinsic dimension.
        k_rule: 'textbook' or 'delve' (see intrinsic_dimension).
        split: 'train' or 'test'.
        source: 'prebn_nearest4' (needs a dump with prebn) or 'postrelu_avgpool4'.
    Returns:
        the saturation table.
    """
    _check_rule(delta, k_rule)
    if split not in h5io.SPLITS:
        raise ConfigError(f"saturation split '{split}' is unknown; use one of {h5io.SPLITS}")
    if source not in SOURCES:
        raise ConfigError(f"saturation source '{source}' is unknown; use one of {SOURCES}")
    with h5io.open_activations(h5_path) as h5:
        if source == "prebn_nearest4" and not h5io.has_prebn(h5):
            raise ActivationFileError(
                f"{h5_path}: holds no pre-BN maps (/prebn), which saturation.source prebn_nearest4 reads; "
                "rerun the activations rule (it stores them when saturation.source is prebn_nearest4) "
                "or set saturation.source: postrelu_avgpool4"
            )
        frame = h5io.point_frame(h5)
        with_prebn = set(h5io.prebn_point_names(h5)) if source == "prebn_nearest4" else set()
        rows = [
            _layer_row(h5, name, split, delta, k_rule, batch_size, "prebn" if name in with_prebn else "layers")
            for name in frame["probe_point"]
        ]
    return pd.concat([frame, pd.DataFrame(rows)], axis=1)


def _layer_row(h5, name: str, split: str, delta: float, k_rule: str, batch_size: int, group: str) -> dict:
    shape = h5io.layer_shape(h5, name, group)
    n = h5io.n_rows(h5, split)
    acc = CovarianceAccumulator()
    for start in range(0, n, batch_size):
        acc.update(channelwise(h5io.feature_rows(h5, name, split, slice(start, start + batch_size), group), shape))
    try:
        idim = intrinsic_dimension(np.linalg.eigvalsh(acc.covariance()), delta, k_rule)
    except AnalysisError as err:
        raise AnalysisError(f"probe point '{name}' ({split}, {group}): {err}") from None
    width = shape[0]
    return {
        "saturation": idim / width,
        "intrinsic_dim": idim,
        "n_features": width,
        "delta": delta,
        "k_rule": k_rule,
        "n_samples": acc.n,
        "source": GROUP_SOURCE[group],
    }


def _check_rule(delta: float, k_rule: str) -> None:
    if k_rule not in K_RULES:
        raise ConfigError(f"saturation k_rule '{k_rule}' is unknown; use one of {K_RULES}")
    if not 0 < delta < 1:
        raise ConfigError(f"saturation delta must lie in (0, 1), got {delta}")


def _as_float64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)
