"""Gradient magnitude at every probe point of a trained model (docs/design.md §5, Fig. 6).

For probe point l with activation a_l and L = sum_i CE(f(x_i), y_i) over a batch,

    g_l(batch)     = mean over samples i and units u of |dL / d a_l[i, u]|
    mean_abs_grad_l = mean of g_l over the batches.

In eval mode the samples do not interact, so dL/da_l[i] = dCE_i/da_l[i]: summing (not
averaging) the loss makes g_l each sample's own gradient, independent of the batch size
(a training step's gradient is this divided by B).

The model runs in eval() mode: train-mode BatchNorm would update its running statistics (the
model would change) and would couple the samples of a batch through batch statistics;
dropout would add noise. Gradients are taken with torch.autograd.grad with respect to the
probe-point activations only, so no parameter's .grad is touched and no optimizer runs.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from flowprobe.errors import AnalysisError, ConfigError
from flowprobe.models.base import Tap, taps

GRADIENT_COLUMNS = ["probe_point", "stage", "block", "pathway", "position", "kind", "mean_abs_grad", "n_batches"]


def _selected_taps(model: nn.Module, names: list[str] | None) -> list[Tap]:
    all_taps = taps(model)
    if names is None:
        return all_taps
    known = {t.point.name for t in all_taps}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"probe points {unknown} are not in this model; it has {sorted(known)}")
    wanted = set(names)
    return [t for t in all_taps if t.point.name in wanted]


def _batch_gradients(model: nn.Module, chosen: list[Tap], x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Mean |dL/da| of one batch at each chosen tap (L = summed cross-entropy)."""
    captured: dict[str, torch.Tensor] = {}

    def capture(tap: Tap, _inputs, output: torch.Tensor) -> None:
        if tap.point.name in captured:
            raise AnalysisError(f"probe point {tap.point.name} ran twice in one forward pass")
        captured[tap.point.name] = output

    handles = [t.register_forward_hook(capture) for t in chosen]
    try:
        with torch.enable_grad():
            # an input that requires grad keeps every activation in the graph, even when the
            # caller froze the parameters
            loss = F.cross_entropy(model(x.detach().requires_grad_(True)), y, reduction="sum")
            outputs = [captured[t.point.name] for t in chosen]
            if not all(o.requires_grad for o in outputs):
                raise AnalysisError("a probe point's activation does not require grad (is a Tap ablated?)")
            grads = torch.autograd.grad(loss, outputs)
    finally:
        for h in handles:
            h.remove()
    return [g.detach().abs().double().mean().item() for g in grads]


def gradient_table(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                   probe_points: list[str] | None = None, device: str | torch.device | None = None
                   ) -> pd.DataFrame:
    """Mean |dL/d activation| per probe point, averaged over `batches` (see module docstring).

    batches: (x float [B, C, H, W] already normalised, y int64 [B]) pairs. device: where to
    run (the model is moved there); default the model's current device.
    """
    if device is not None:
        model.to(device)
    device = next(model.parameters()).device
    chosen = _selected_taps(model, probe_points)
    was_training = model.training
    sums = np.zeros(len(chosen), dtype=np.float64)
    n_batches = 0
    model.eval()
    try:
        for x, y in batches:
            sums += _batch_gradients(model, chosen, x.to(device), y.to(device))
            n_batches += 1
    finally:
        model.train(was_training)
    if n_batches == 0:
        raise AnalysisError("gradient_table got no batches; pass a non-empty iterable of (x, y)")
    means = sums / n_batches
    if not np.all(np.isfinite(means)):
        bad = [t.point.name for t, m in zip(chosen, means) if not np.isfinite(m)]
        raise AnalysisError(f"non-finite gradients at {bad}; check the model weights and inputs")
    rows = [
        {"probe_point": t.point.name, "stage": t.point.stage, "block": t.point.block,
         "pathway": t.point.pathway, "position": t.point.position, "kind": t.point.kind,
         "mean_abs_grad": m, "n_batches": n_batches}
        for t, m in zip(chosen, means)
    ]
    return pd.DataFrame(rows, columns=GRADIENT_COLUMNS)
