"""Solvers behind `flowprobe.analysis.probes`: torch full-batch L-BFGS (CPU/GPU) and the
scikit-learn `lbfgs` reference, both minimising the objective stated in probes.py."""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from flowprobe.devices import resolve_device

SMALL_PROBLEM = 1 << 20  # features x rows below which the torch backend runs single-threaded
PLAIN_ITER = 10  # plain L-BFGS iterations tried before the preconditioner is sketched
SKETCH_ROWS = 10_000  # rows the preconditioner's covariance sketch reads at most
STEEP = 20.0  # top / mean covariance eigenvalue above which the preconditioner is used at once
CHUNK_BYTES = 1 << 24  # temporaries of row-chunked passes over the features (16 MiB)
CACHE_BYTES = 1 << 22  # CPU passes that reuse a row chunk while it is in cache (objective, standardisation; 4 MiB)


@dataclass
class _Fit:
    params: object
    n_iter: int
    converged: bool


def as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def chunk_rows(x, itemsize: int, budget: int | None = None) -> int:
    """Rows of `x` per chunk so that a chunk of `itemsize`-byte values takes `budget` bytes
    (CHUNK_BYTES when None; the cache-sized passes give CACHE_BYTES)."""
    return max(1, (budget or CHUNK_BYTES) // (itemsize * max(1, x.shape[1])))


class TorchLBFGS:
    """Full-batch L-BFGS (strong Wolfe) on the device, float32 with a float64 finish.

    One evaluation is two matmuls (logits X W^T, gradient G^T X with G = (softmax - onehot)/n)
    and no autograd graph; the loss is summed in float64, so the line search sees loss
    differences far below float32's resolution of a single value. A fit first runs plain
    L-BFGS (well-conditioned features converge in a few iterations, cheaper than any
    preconditioner); only if that has not converged after PLAIN_ITER iterations it continues
    on Z with W = Z M, M = P^{-1/2} for the preconditioner
    P = V diag(lam + l2) V^T + (lam_r + l2)(I - V V^T) built from the top-r eigenpairs
    (lam, V) of the feature covariance X^T X / n (randomised Nystrom/Rayleigh-Ritz, Halko et
    al. 2011). The objective and its minimiser are unchanged, only the curvature L-BFGS sees
    is evened out (3-4x fewer iterations on CNN features). (lam, V) do not depend on l2: they
    are sketched once per solver (one probe point) and reused along the l2 grid and for the
    refit, whose rows have the same covariance. Convergence is judged on the W gradient.
    """

    def __init__(self, max_iter: int, tol: float, device=None, rank: int = 64):
        self.max_iter, self.tol, self.rank = max_iter, tol, rank
        self.device = resolve_device(device)
        self._eig = None  # (lam, V), sketched when a first fit needs the preconditioner

    def standardise(self, x_train, x_test, overwrite: bool = False):
        """Standardise with train statistics; with `overwrite`, float32 inputs already on the
        device are modified in place, others are written to a new float32 tensor.

        One pass over cache-sized row chunks for the moments, taken of x - s with s the first
        chunk's mean so that E[(x-s)^2] - E[x-s]^2 does not cancel (chunk sums in the working
        dtype, running totals float64); one more for (x - mean) / std, a chunk at a time (read
        once, written once; no temporary of the matrix's size, no copy before the scaling).
        """
        (x_train, own_train), (x_test, own_test) = (self._on_device(v) for v in (x_train, x_test))
        n = len(x_train)
        rows = chunk_rows(x_train, 4, CACHE_BYTES)
        work = _working_dtype(x_train)
        shift = x_train[:rows].to(work).mean(0)
        total = shift.new_zeros(x_train.shape[1], dtype=torch.float64)
        total_sq = torch.zeros_like(total)
        for chunk in x_train.split(rows):
            centred = chunk.to(work) - shift
            total += centred.sum(0)
            total_sq += centred.pow_(2).sum(0)
        offset = total / n
        std = (total_sq / n - offset.pow(2)).clamp_min(0).sqrt()
        std[std <= 1e-6 * shift.abs()] = 1.0  # constant feature (up to float32 rounding): centred, unscaled
        mean = shift + offset
        return (
            self._scaled(x_train, mean, std, in_place=overwrite or own_train),
            self._scaled(x_test, mean, std, in_place=overwrite or own_test),
        )

    def _on_device(self, x) -> tuple[torch.Tensor, bool]:
        """(`x` as a tensor on the device, whether that is a copy of ours): an input already on
        the device is used as it is, whatever its dtype; one elsewhere is copied there as float32."""
        t = torch.as_tensor(x)
        return (t, False) if t.device == self.device else (t.to(self.device, torch.float32), True)

    def _scaled(self, x, mean, std, in_place: bool) -> torch.Tensor:
        """(x - mean) / std as float32, into x itself when allowed and x is float32."""
        in_place = in_place and x.dtype == torch.float32
        out = x if in_place else torch.empty(x.shape, device=self.device, dtype=torch.float32)
        work = _working_dtype(x)  # float64 inputs are centred in float64, then rounded
        mean, std = mean.to(work), std.to(work)
        rows = chunk_rows(x, 4, CACHE_BYTES)
        for start in range(0, len(x), rows):
            out[start : start + rows] = (x[start : start + rows].to(work) - mean).div_(std)
        return out

    def logits(self, params, x) -> np.ndarray:
        w, b = params
        return torch.addmm(b[:, None], w, x.T).T.cpu().numpy()  # W x^T: MKL's faster layout (see objective)

    def fit(self, x, y, l2, init=None) -> _Fit:
        y = torch.as_tensor(y, device=x.device)
        k = int(y.max()) + 1
        w, b = (p.clone() for p in init) if init else (x.new_zeros(k, x.shape[1]), x.new_zeros(k))
        with _one_thread_if_small(x):
            return self._minimise(x, y, l2, w, b)

    def _minimise(self, x, y, l2, w, b) -> _Fit:
        """L-BFGS until ||dL/dW||_inf <= tol: preconditioned from the start when the feature
        spectrum is steep or an earlier fit of this probe point needed it, else plain first
        and preconditioned if that does not converge quickly; finishing in float64 when
        float32 stalls; stops at max_iter."""
        if self._eig is None and _spectrum_is_steep(x):
            self._eig = _covariance_sketch(x, self.rank)
        plain, dtype = self._eig is None, x.dtype
        pre = _Preconditioner(None, l2, dtype) if plain else self._preconditioner(x, l2, dtype)
        budget = min(PLAIN_ITER, self.max_iter) if plain else self.max_iter
        z, n_iter = w, 0
        while True:
            its, converged = _lbfgs(pre, x, y, z, b, budget - n_iter, self.tol)
            n_iter += its
            if converged or n_iter >= self.max_iter:
                break
            if plain:  # plain L-BFGS did not converge quickly: precondition from here on
                plain, pre, budget = False, self._preconditioner(x, l2, dtype), self.max_iter
                z = pre.to_z(z)
            elif dtype == torch.float32:  # stalled at float32 resolution: finish in float64
                w, b, dtype = pre.to_w(z).double(), b.double(), torch.float64
                pre = self._preconditioner(x, l2, dtype)
                z = pre.to_z(w)
            else:
                break
        return _Fit((pre.to_w(z).float(), b.float()), n_iter, converged)

    def _preconditioner(self, x, l2, dtype) -> _Preconditioner:
        if self._eig is None:
            self._eig = _covariance_sketch(x, self.rank)
        return _Preconditioner(self._eig, l2, dtype)


def _working_dtype(x) -> torch.dtype:
    """float32, or float64 for float64 inputs (standardised before they are rounded to float32)."""
    return torch.promote_types(x.dtype, torch.float32)


@contextmanager
def _one_thread_if_small(x):
    """Run a small CPU problem single-threaded: there every op's thread hand-off costs more
    than it saves, and on oversubscribed cores (parallel workflow jobs) it costs 100x."""
    before = torch.get_num_threads()
    if x.device.type != "cpu" or x.numel() > SMALL_PROBLEM or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _spectrum_is_steep(x, rows: int = 2048, steps: int = 5) -> bool:
    """Whether the top eigenvalue of X^T X / n exceeds STEEP x the mean eigenvalue (power
    iteration on evenly strided rows): then plain L-BFGS would crawl along the small
    eigen-directions, and the preconditioner is sketched up front.

    Each step's Rayleigh quotient is a lower bound of the top eigenvalue that only grows, so
    the first one above the threshold decides (CNN features: after one or two steps, top/mean
    40-400); a flat spectrum runs all `steps` (synthetic isotropic features: 4.5 after 4
    steps, 4.8 after 8).
    """
    sub = x[:: max(1, len(x) // rows)]
    threshold = STEEP * torch.linalg.vector_norm(sub).pow(2) / x.shape[1]  # STEEP x mean eigenvalue, x len(sub)
    v = torch.ones(x.shape[1], device=x.device, dtype=x.dtype) / math.sqrt(x.shape[1])
    for _ in range(steps):
        projected = sub @ v
        if projected.pow(2).sum() > threshold:  # v^T S^T S v, v a unit vector
            return True
        v = sub.T @ projected
        v /= v.norm().clamp_min(1e-30)
    return False


def _covariance_sketch(x, rank: int):
    """Top-r eigenpairs (lam, V) of X^T X / n by a randomised range finder and Rayleigh-Ritz
    (Halko et al. 2011, Alg. 4.1 + 5.3) on at most SKETCH_ROWS evenly strided rows (the
    covariance of a preconditioner needs no more); False when the sketch is degenerate."""
    x = x[:: -(-len(x) // SKETCH_ROWS)]
    n, d = x.shape
    r = min(rank, d, n)
    gen = torch.Generator(device=x.device).manual_seed(0)
    omega = torch.randn(d, r, generator=gen, device=x.device, dtype=x.dtype)
    try:
        q, _ = torch.linalg.qr(x.T @ (x @ omega))
        xq = (x @ q).double()
        lam, u = torch.linalg.eigh(xq.T @ xq / n)  # r x r, float64: cheap and stable
    except torch.linalg.LinAlgError:
        # Rank-deficient features (e.g. many dead ReLUs) can defeat the sketch; the
        # preconditioner only speeds L-BFGS up, so fall back to none (M = I).
        return False
    return lam.clamp_min(0), q.double() @ u


class _Preconditioner:
    """W = Z M with M = P^{-1/2} (see TorchLBFGS); M is symmetric, so dL/dZ = (dL/dW) M.
    `eig` None or False: M = I (plain L-BFGS)."""

    def __init__(self, eig, l2: float, dtype):
        self.l2, self.dtype, self.identity = l2, dtype, not eig
        if self.identity:
            return
        lam, basis = eig
        self.basis = basis.to(dtype)
        self.m = (lam + l2).rsqrt().to(dtype)
        self.m_rest = (lam.min() + l2).rsqrt().to(dtype)

    def _apply(self, a, m, m_rest):
        return m_rest * a + ((a @ self.basis) * (m - m_rest)) @ self.basis.T

    def to_w(self, z):
        return z if self.identity else self._apply(z, self.m, self.m_rest)

    def to_z(self, w):
        return w if self.identity else self._apply(w, 1 / self.m, 1 / self.m_rest)

    to_z_grad = to_w


class _Converged(Exception):
    """Raised by the L-BFGS closure at the first evaluated point with ||dL/dW||_inf <= tol."""


def _lbfgs(pre, x, y, z, b, max_iter: int, tol: float) -> tuple[int, bool]:
    """torch.optim.LBFGS over (z, b) in place, with hand-written gradients and W = pre.to_w(z);
    returns (iterations, converged).

    Convergence is judged on the W gradient inside the closure: torch's own test would look
    at the Z gradient, and restarting L-BFGS to tighten it would throw its history away. The
    closure raises at a converged point, which the line search has just moved (z, b) to.

    First step: torch steps 1/||g||_1 along -g in its first iteration, hundreds of times too
    short on tens of thousands of weights, and its line search then spends ~3 evaluations
    growing the step tenfold at a time. A cold start (z = 0, b = 0) therefore runs on
    (z, b) / s with s = ||g||_1 / ||g||_2, which makes that first step 1/||g||_2 along -g
    (a unit step, as scipy's L-BFGS-B takes); L-BFGS is invariant to a uniform scaling of
    its variables after the first step, so only that step changes. Warm starts keep torch's
    short first step (they start close to the optimum).
    """
    if max_iter < 1:
        return 0, False
    try:
        first = _evaluate(pre, x, y, z, b, tol)
    except _Converged:
        return 0, True
    scale = _first_step_scale(first[1:]) if not (z.any() or b.any()) else 1.0
    u, c = z / scale, b / scale  # new leaf tensors: L-BFGS steps these, (z, b) get them back below
    opt = torch.optim.LBFGS(
        [u, c],
        lr=1,
        max_iter=max_iter,
        tolerance_grad=0.0,
        tolerance_change=1e-12,
        history_size=30,
        line_search_fn="strong_wolfe",
    )
    pending = [first]  # the starting point is evaluated already: the optimiser's first call gets it

    def closure():
        loss, grad_z, grad_b = pending.pop() if pending else _evaluate(pre, x, y, scale * u, scale * c, tol)
        u.grad, c.grad = scale * grad_z, scale * grad_b
        return loss

    converged = False
    try:
        opt.step(closure)
    except _Converged:
        converged = True
    finally:
        z.copy_(scale * u)
        b.copy_(scale * c)
    return int(opt.state[u].get("n_iter", 0)), converged


def _evaluate(pre, x, y, z, b, tol: float):
    """(loss, dL/dZ, dL/db) at W = pre.to_w(z); raises _Converged where ||dL/dW||_inf <= tol."""
    loss, grad_w, grad_b = objective(x, y, pre.l2, pre.to_w(z), b)
    if max(grad_w.abs().max().item(), grad_b.abs().max().item()) <= tol:
        raise _Converged
    return loss, pre.to_z_grad(grad_w), grad_b


def _first_step_scale(grads) -> float:
    """s with which torch's first step 1/||g_s||_1 along -g_s on (z, b) / s is 1/||g||_2 along
    -g on (z, b); 1 where torch would take the full step (||g||_1 <= 1)."""
    l1 = sum(float(g.abs().sum()) for g in grads)
    l2 = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
    return l1 / l2 if l1 * l1 / l2 >= 1 else 1.0


@torch.no_grad()
def objective(x, y, l2, w, b):
    """L(W, b) of the probes module docstring and its exact gradient (dL/dW, dL/db).

    The loss is accumulated in float64. On the CPU the rows are taken in chunks of
    CACHE_BYTES, so that a chunk read for the logits is still in cache for the gradient
    (one pass over x from memory instead of two; 1.4-1.7x faster per evaluation at 1,024+
    features, benchmarks/README.md); logits are computed as W x^T (classes x rows), the
    faster layout of MKL's skinny matmul. With float64 (w, b) and float32 x, x is cast to
    float64 a chunk at a time, so the float64 finish needs no float64 copy of x.
    """
    rows = _objective_rows(x, w)
    loss = 0.5 * l2 * w.pow(2).sum(dtype=torch.float64)
    grad_w, grad_b = l2 * w, torch.zeros_like(b)
    columns = torch.arange(min(rows, len(x)), device=x.device)
    for start in range(0, len(x), rows):
        xc, yc = x[start : start + rows].to(w.dtype), y[start : start + rows]
        logits = torch.addmm(b[:, None], w, xc.T)  # classes x rows
        lse = logits.logsumexp(0, keepdim=True)
        loss += (lse.squeeze(0) - logits.gather(0, yc[None]).squeeze(0)).sum(dtype=torch.float64) / len(x)
        g = (logits - lse).exp_()
        g[yc, columns[: len(yc)]] -= 1.0
        g /= len(x)
        grad_w.addmm_(g, xc)
        grad_b += g.sum(1)
    return loss, grad_w, grad_b


def _objective_rows(x, w) -> int:
    """Rows per chunk of `objective`: cache-sized on the CPU; on a GPU all rows at once,
    or CHUNK_BYTES chunks when x must be cast to w's dtype (the float64 finish)."""
    if x.device.type == "cpu":
        return chunk_rows(x, w.element_size(), CACHE_BYTES)
    return len(x) if x.dtype == w.dtype else chunk_rows(x, w.element_size())


class SklearnLBFGS:
    """Reference backend: `LogisticRegression(solver='lbfgs', C=1/(l2 n))` in float64,
    cold-started at every l2; converged means n_iter_ < max_iter."""

    def __init__(self, max_iter: int, tol: float):
        self.max_iter, self.tol = max_iter, tol

    def standardise(self, x_train, x_test, overwrite: bool = False):
        x_train, x_test = (as_numpy(v).astype(np.float64) for v in (x_train, x_test))
        mean, std = x_train.mean(0), x_train.std(0)
        std[std == 0] = 1.0
        return (x_train - mean) / std, (x_test - mean) / std

    def fit(self, x, y, l2, init=None) -> _Fit:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        # two classes: sklearn fits one binomial v = W_1 - W_0, and the multinomial optimum
        # has W_1 = -W_0 = v/2, so (l2/2)||W||^2 = (l2/4)||v||^2, i.e. C doubles
        scale = 2.0 if len(np.unique(y)) == 2 else 1.0
        c = scale / (l2 * len(y))
        model = LogisticRegression(C=c, solver="lbfgs", max_iter=self.max_iter, tol=self.tol)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # reported through `converged`
            model.fit(x, y)
        n_iter = int(np.max(model.n_iter_))
        w, b = model.coef_, model.intercept_
        if w.shape[0] == 1:  # binomial v -> the equivalent multinomial pair (-v/2, v/2)
            w, b = np.concatenate([-w, w]) / 2, np.concatenate([-b, b]) / 2
        return _Fit((w, b), n_iter, n_iter < self.max_iter)

    def logits(self, params, x) -> np.ndarray:
        w, b = params
        return x @ w.T + b
