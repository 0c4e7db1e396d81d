"""Linear CKA (Kornblith et al. 2019), docs/design.md §5: two estimators, all sums in float64.

Exact, feature space, on column-centred X [n, Dx], Y [n, Dy] with K = X X^T, L = Y Y^T:
    CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)                      (Kornblith eq. 5)
Debiased: HSIC_1 of Song et al. 2012 (Nguyen et al. 2021 eq. 3) in place of HSIC, with
K~ = K with a zeroed diagonal:
    HSIC_1(K, L) = [tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n(n-3)).
Centred features give K 1 = 0, and with k_i = ||x_i||^2, l_i = ||y_i||^2 this becomes
    n(n-3) HSIC_1 = ||Y^T X||_F^2 - n/(n-2) k.l + (sum k)(sum l) / ((n-1)(n-2)).
HSIC_1 is invariant to shifting the features, so centring changes nothing but the rounding.
`MinibatchCKA` is the minibatch estimator of Nguyen et al. 2021 (see its docstring).
Never clamped, no epsilons: NaN or |CKA| > 1 + 1e-6 raises AnalysisError naming the layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from flowprobe import h5io
from flowprobe.config import DEFAULTS
from flowprobe.devices import resolve_device
from flowprobe.errors import AnalysisError, ConfigError

_D = DEFAULTS["cka"]  # the one place of the CKA defaults
CKA_TOLERANCE = 1e-6  # rounding allowance above |CKA| = 1


@dataclass
class HsicTerms:
    """Sums that determine HSIC between two centred feature sets over n rows:
    frob2 = ||B^T A||_F^2, rowdot = sum_i ||a_i||^2 ||b_i||^2, sum_a = ||A||_F^2, sum_b = ||B||_F^2."""

    frob2: float
    rowdot: float
    sum_a: float
    sum_b: float

    def hsic(self, n: int, debiased: bool) -> float:
        """HSIC up to a factor that cancels in CKA: ||B^T A||_F^2 (biased), n(n-3) HSIC_1 (debiased)."""
        if not debiased:
            return self.frob2
        if n < 4:
            raise AnalysisError(f"debiased CKA needs at least 4 samples, got {n}")
        return self.frob2 - n / (n - 2) * self.rowdot + self.sum_a * self.sum_b / ((n - 1) * (n - 2))


def linear_cka(x, y, debiased: bool = _D["debiased"]) -> float:
    """Linear CKA between x [N, Dx] and y [N, Dy] (numpy or torch), feature-space form."""
    x, y = _centred(x, "x"), _centred(y, "y")
    if len(x) != len(y):
        raise AnalysisError(f"CKA needs the same rows in x and y, got {len(x)} and {len(y)}")
    kx, ky = (x * x).sum(1), (y * y).sum(1)
    xy = HsicTerms(_cross_frob2(x, y), kx @ ky, kx.sum(), ky.sum())
    xx = HsicTerms(_cross_frob2(x, x), kx @ kx, kx.sum(), kx.sum())
    yy = HsicTerms(_cross_frob2(y, y), ky @ ky, ky.sum(), ky.sum())
    return cka_from_terms(xy, xx, yy, len(x), debiased, "x", "y")


def cka_from_terms(
    xy: HsicTerms, xx: HsicTerms, yy: HsicTerms, n: int, debiased: bool, name_x: str, name_y: str
) -> float:
    """HSIC(x, y) / sqrt(HSIC(x, x) HSIC(y, y)), checked: never clamped."""
    hxy, hxx, hyy = (t.hsic(n, debiased) for t in (xy, xx, yy))
    return check_cka(hxy / math.sqrt(hxx * hyy) if hxx > 0 and hyy > 0 else math.nan, name_x, name_y, hxx, hyy)


def check_cka(value: float, name_x: str, name_y: str, hxx: float, hyy: float) -> float:
    """Raise AnalysisError for NaN or |CKA| > 1 (+ CKA_TOLERANCE), naming the layers."""
    if not math.isfinite(value):
        raise AnalysisError(
            f"CKA({name_x}, {name_y}) is {value} (self-HSIC {hxx:.3g}, {hyy:.3g}): constant or "
            "non-finite features; check the activations of these layers"
        )
    if abs(value) > 1 + CKA_TOLERANCE:
        raise AnalysisError(f"CKA({name_x}, {name_y}) = {value!r} lies outside [-1, 1]: a numerical fault")
    return float(value)


def _cross_frob2(a: np.ndarray, b: np.ndarray) -> float:
    """||B^T A||_F^2 = tr(K L), from whichever of [Db, Da] or two [n, n] Grams is smaller."""
    n = len(a)
    if a.shape[1] * b.shape[1] <= n * n:
        return float(np.square(b.T @ a).sum())
    return float(((a @ a.T) * (b @ b.T)).sum())


def _centred(x, name: str) -> np.ndarray:
    x = as_float64(x)
    if x.ndim != 2:
        raise AnalysisError(f"CKA input {name} must be [samples, features], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise AnalysisError(f"CKA input {name} holds NaN or inf; check the activations")
    return x - x.mean(0)


def as_float64(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


class MinibatchCKA:
    """Minibatch linear CKA of Nguyen et al. 2021, every layer pair at once.

    Per minibatch of b rows, for every layer l: features centred over the batch, K_l = X_l X_l^T,
    U-centred (Szekely & Rizzo 2014) with a zero diagonal:
        U(K)_ij = K_ij - r_i/(b-2) - r_j/(b-2) + s/((b-1)(b-2))  (i != j),
    r = row sums and s = total of K~. Then HSIC_1(K, L) = <U(K), U(L)>_F / (b(b-3)), so with
    the L = Lx + Ly flattened U(K_l) stacked as G [L, b*b], one product G G^T gives every HSIC_1.
    These are summed over batches in float64; CKA_ij = S_ij / sqrt(S_ii S_jj).
    With debiased=False each batch contributes the biased HSIC_0(K, L) = <K_c, L_c>_F / (b-1)^2
    of Kornblith 2019 eq. 3 instead (K_c = H K H: the Gram of the batch-centred features), so
    one batch holding every row gives the exact biased linear CKA.
    """

    def __init__(
        self, n_layers_x: int, n_layers_y: int | None = None, *, names_x=None, names_y=None, device=None,
        debiased: bool = True,
    ):
        """names_* label the layers in error messages; device defaults to CUDA when available;
        debiased picks HSIC_1 (U-centred Grams, Nguyen et al. 2021) or the biased HSIC_0."""
        self.n_x, self.n_y, self.debiased = n_layers_x, n_layers_y, debiased
        self.names_x = list(names_x or [f"x[{i}]" for i in range(n_layers_x)])
        self.names_y = list(names_y or [f"y[{j}]" for j in range(n_layers_y or 0)])
        self.device = resolve_device(device)
        n_all = n_layers_x + (n_layers_y or 0)
        self.hsic = torch.zeros(n_all, n_all, dtype=torch.float64, device=self.device)
        self.n_batches = 0

    def update(self, feats_x: list, feats_y: list | None = None) -> None:
        """Add one minibatch: one [b, D_l] array (numpy or torch) per layer, same b rows."""
        feats_y = list(feats_y or [])
        if len(feats_x) != self.n_x or len(feats_y) != (self.n_y or 0):
            raise AnalysisError(
                f"MinibatchCKA expects {self.n_x} x and {self.n_y or 0} y layers per update, "
                f"got {len(feats_x)} and {len(feats_y)}"
            )
        feats = list(feats_x) + feats_y
        b = len(feats[0])
        if any(len(f) != b for f in feats):
            rows = [len(f) for f in feats]
            raise AnalysisError(f"MinibatchCKA: all layers of a minibatch need the same rows, got {rows}")
        if b < 4:
            raise AnalysisError(f"MinibatchCKA needs minibatches of at least 4 rows, got {b}")
        grams = torch.empty(len(feats), b, b, dtype=torch.float64, device=self.device)
        for i, feat in enumerate(feats):
            self._u_centred_gram(feat, i, out=grams[i])
        grams = grams.flatten(1)
        self.hsic += grams @ grams.T / ((b * (b - 3)) if self.debiased else (b - 1) ** 2)
        self.n_batches += 1

    def _u_centred_gram(self, feat, index: int, out: torch.Tensor) -> None:
        """U(K) (debiased) or K_c (biased) of the docstring written into `out` [b, b], in place."""
        x = torch.as_tensor(feat).to(self.device, torch.float64).flatten(1)
        b = len(x)
        x = x - x.mean(0)
        k = torch.matmul(x, x.T, out=out)
        if not torch.isfinite(k.diagonal()).all():  # a NaN/inf anywhere in x reaches the diagonal
            raise AnalysisError(f"MinibatchCKA: layer {self._name(index)} holds NaN or inf; check its activations")
        if not self.debiased:  # x is centred over the batch, so K = X X^T is already H K H
            return
        k.fill_diagonal_(0.0)
        r = k.sum(1) / (b - 2)
        k -= r[:, None]
        k -= r[None, :]
        k += r.sum() / (b - 1)  # s / ((b-1)(b-2)) with s = (b-2) sum(r)
        k.fill_diagonal_(0.0)

    def compute(self) -> np.ndarray:
        """CKA [Lx, Ly] (or [Lx, Lx] without y layers) over all minibatches so far."""
        if self.n_batches == 0:
            raise AnalysisError("MinibatchCKA.compute() before any update(); feed at least one minibatch")
        self_hsic = torch.diagonal(self.hsic).cpu().numpy()
        lo = self.n_x if self.n_y else 0
        cross = self.hsic[: self.n_x, lo:].cpu().numpy()
        cka = np.empty_like(cross)
        for i in range(cross.shape[0]):
            for j in range(cross.shape[1]):
                hxx, hyy = self_hsic[i], self_hsic[lo + j]
                value = cross[i, j] / math.sqrt(hxx * hyy) if hxx > 0 and hyy > 0 else math.nan
                cka[i, j] = check_cka(value, self._name(i), self._name(lo + j), hxx, hyy)
        return cka

    def _name(self, index: int) -> str:
        return self.names_x[index] if index < self.n_x else self.names_y[index - self.n_x]


def cka_output_table(
    h5_path, *, split: str = _D["split"], debiased: bool = _D["debiased"], batch_size: int = 2048
) -> pd.DataFrame:
    """Exact linear CKA of every probe point with the network's logits (/output).

    point_frame columns + cka, debiased. Each layer is streamed in `batch_size` rows, twice:
    first its float64 mean, then the centred sums X^T X, Y^T X and the row norms of HsicTerms.
    """
    _check_split(split)
    with h5io.open_activations(h5_path) as h5:
        frame = h5io.point_frame(h5)
        y = as_float64(h5io.outputs(h5, split))
        y -= y.mean(0)
        ky = (y * y).sum(1)
        yy = HsicTerms(_cross_frob2(y, y), ky @ ky, ky.sum(), ky.sum())
        values = []
        for name in frame["probe_point"]:
            xy, xx = _streamed_terms(h5[f"layers/{name}/{split}"], y, ky, batch_size)
            values.append(cka_from_terms(xy, xx, yy, len(y), debiased, name, "output"))
    return frame.assign(cka=values, debiased=debiased)


def _streamed_terms(data, y: np.ndarray, ky: np.ndarray, batch_size: int) -> tuple[HsicTerms, HsicTerms]:
    """HsicTerms (x with y, x with x) for x = the rows of an HDF5 dataset, in float64."""
    n = data.shape[0]
    mean = sum(as_float64(data[i : i + batch_size]).sum(0) for i in range(0, n, batch_size)) / n
    xtx = np.zeros((data.shape[1],) * 2)
    ytx = np.zeros((y.shape[1], data.shape[1]))
    kxy = kxx = sum_x = 0.0
    for i in range(0, n, batch_size):
        x = as_float64(data[i : i + batch_size]) - mean
        if not np.isfinite(x).all():
            raise AnalysisError(f"{data.name} holds NaN or inf; check the activations")
        kx = (x * x).sum(1)
        xtx += x.T @ x
        ytx += y[i : i + batch_size].T @ x
        kxy += kx @ ky[i : i + batch_size]
        kxx += kx @ kx
        sum_x += kx.sum()
    xy = HsicTerms(float(np.square(ytx).sum()), kxy, sum_x, float(ky.sum()))
    return xy, HsicTerms(float(np.square(xtx).sum()), kxx, sum_x, sum_x)


def cka_pathway_table(
    h5_path,
    *,
    stage: int | None = None,
    block: int | None = None,
    pathways: tuple[str, str] | None = None,
    split: str = _D["split"],
    batch_size: int = _D["batch_size"],
    seed: int = 0,
    debiased: bool = _D["debiased"],
) -> pd.DataFrame:
    """Minibatch CKA between the layers of two pathways of one block (the study's Fig. 9).

    Long table: layer_a, layer_b, position_a, position_b, pathway_a, pathway_b, stage, block,
    cka, debiased (HSIC_1 per batch, or the biased HSIC_0: MinibatchCKA). Default block: the last one holding both pathways. Default pathways: `min`/`max`
    where the model has them, else the first two non-trunk labels (`p0`, `p1` for identical
    kernels, as in the study's MPNet2(8:3x3,8:3x3)). Rows are shuffled with `seed`
    before batching (stored splits may be sorted by class) and split into near-equal batches.
    """
    _check_split(split)
    with h5io.open_activations(h5_path) as h5:
        frame = h5io.point_frame(h5)
        pathways = tuple(pathways) if pathways else _default_pathways(frame)
        stage, block = _choose_block(frame, stage, block, pathways)
        here = frame[(frame["stage"] == stage) & (frame["block"] == block)]
        sides = [here[here["pathway"] == p].sort_values("position") for p in pathways]
        names = [list(side["probe_point"]) for side in sides]
        mcka = MinibatchCKA(len(names[0]), len(names[1]), names_x=names[0], names_y=names[1], debiased=debiased)
        n = h5[f"layers/{names[0][0]}/{split}"].shape[0]
        order = np.random.default_rng(seed).permutation(n)
        for rows in np.array_split(order, max(1, n // batch_size)):
            rows = np.sort(rows)  # h5py reads increasing indices
            mcka.update(*[[h5[f"layers/{name}/{split}"][rows] for name in side] for side in names])
        cka = mcka.compute()
    a, b = sides
    return pd.DataFrame(
        [
            {
                "layer_a": ra.probe_point, "layer_b": rb.probe_point,
                "position_a": ra.position, "position_b": rb.position,
                "pathway_a": pathways[0], "pathway_b": pathways[1],
                "stage": stage, "block": block, "cka": cka[i, j], "debiased": debiased,
            }
            for i, ra in enumerate(a.itertuples()) for j, rb in enumerate(b.itertuples())
        ]
    )


def _default_pathways(frame: pd.DataFrame) -> tuple[str, str]:
    labels = [p for p in dict.fromkeys(frame["pathway"]) if p != "trunk"]
    if {"min", "max"} <= set(labels):
        return ("min", "max")
    if len(labels) < 2:
        raise AnalysisError(f"the model has pathways {labels}; a pathway heatmap needs two (an MPNet with >= 2 pathways)")
    return tuple(sorted(labels)[:2])


def _choose_block(frame: pd.DataFrame, stage, block, pathways) -> tuple[int, int]:
    """(stage, block) holding every pathway in `pathways`: the requested one, else the last."""
    found = frame.groupby(["stage", "block"], sort=False)["pathway"].agg(lambda p: sorted(set(p)))
    fits = [key for key, have in found.items() if set(pathways) <= set(have)]
    fits = [k for k in fits if (stage is None or k[0] == stage) and (block is None or k[1] == block)]
    if not fits:
        listing = "; ".join(f"stage {s} block {b}: {','.join(p)}" for (s, b), p in found.items())
        raise AnalysisError(
            f"no block (stage={stage}, block={block}) has pathways {list(pathways)}; "
            f"the probe points have {listing}. Choose stage/block/pathways from these."
        )
    return tuple(int(v) for v in fits[-1])


def _check_split(split: str) -> None:
    if split not in h5io.SPLITS:
        raise ConfigError(f"CKA split '{split}' is unknown; use one of {h5io.SPLITS}")
