"""Receptive fields measured from gradient support (shared by the zoo and traced-model tests).

With all-positive conv weights, eval-mode BN and max pools turned into average pools, every ReLU
is active and d(unit)/d(input) is nonzero exactly on the unit's receptive field. One backward
pass measures every probe point: input sample 2t feeds point t's centre unit, sample 2t + 1 its
right neighbour (eval mode keeps the samples independent).
"""
import torch
from torch import nn

from flowprobe.models.base import taps


def positive_weights(model: nn.Module) -> None:
    """All-positive convs; max pools become average pools of the same window (a max pool on a
    constant input passes its gradient to one tied position only)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(1.0 / m.weight[0].numel())
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.MaxPool2d):
            parent, _, attr = name.rpartition(".")
            pool = nn.AvgPool2d(m.kernel_size, m.stride, m.padding, ceil_mode=m.ceil_mode)
            setattr(model.get_submodule(parent) if parent else model, attr, pool)


def measured_fields(model: nn.Module, points: list, size: int) -> dict[str, tuple[int, int]]:
    """{point name: (receptive field, jump)} of `points` (ProbePoints of `model`, in eval mode
    with positive_weights applied), measured at the centre column of a size x size input."""
    outputs = {}
    for tap in taps(model):
        tap.register_forward_hook(lambda m, i, o: outputs.__setitem__(m.point.name, o))
    x = torch.ones(2 * len(points), 3, size, size, requires_grad=True)
    model(x)
    objective = 0
    for t, p in enumerate(points):
        out, centre = outputs[p.name], outputs[p.name].shape[-1] // 2
        objective = objective + out[2 * t, :, centre, centre].sum() + out[2 * t + 1, :, centre, centre + 1].sum()
    objective.backward()
    support = x.grad.abs().sum((1, 2))  # [samples, columns]
    fields = {}
    for t, p in enumerate(points):
        left, right = (support[2 * t + k].nonzero().flatten() for k in (0, 1))
        fields[p.name] = (left.max().item() - left.min().item() + 1, right.min().item() - left.min().item())
    return fields
