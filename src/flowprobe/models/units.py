"""Building blocks shared by the model zoo: units that end in a probe point.

Every unit returns its module and the `Trace` after it, so builders thread receptive
fields through the network in the same statement that creates the layers. ReLUs are never
in-place: gradient hooks on a Tap's output must see the tensor the next layer consumed.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from flowprobe.errors import ModelSpecError
from flowprobe.models.base import Tap
from flowprobe.models.receptive import Site, Trace


class ConvUnit(nn.Sequential):
    """Conv -> BN -> ReLU -> Tap (probe point after the nonlinearity)."""

    def __init__(self, conv: nn.Conv2d, tap: Tap):
        super().__init__(
            OrderedDict(conv=conv, bn=nn.BatchNorm2d(conv.out_channels), relu=nn.ReLU(), tap=tap)
        )


def conv_unit(c_in: int, c_out: int, kernel: int, trace: Trace, site: Site, stride: int = 1,
              dilation: int = 1, bias: bool = False, kind: str = "conv") -> tuple[ConvUnit, Trace]:
    """A 'same'-padded conv unit and the trace after it."""
    k_eff = kernel + (kernel - 1) * (dilation - 1)
    conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=k_eff // 2, dilation=dilation, bias=bias)
    after = trace.conv(kernel, stride, dilation)
    return ConvUnit(conv, Tap(site.point(kind, trace, after))), after


class LinearUnit(nn.Sequential):
    """Linear -> ReLU -> Tap."""

    def __init__(self, d_in: int, d_out: int, tap: Tap):
        super().__init__(OrderedDict(fc=nn.Linear(d_in, d_out), relu=nn.ReLU(), tap=tap))


def linear_unit(d_in: int, d_out: int, trace: Trace, site: Site) -> tuple[LinearUnit, Trace]:
    """A linear unit; on a flattened n x n map its kernel spans the whole map (k = s = n)."""
    after = trace.global_pool()
    return LinearUnit(d_in, d_out, Tap(site.point("linear", trace, after))), after


def init_weights(model: nn.Module, mode: str = "fan_out", linear_std: float | None = None) -> None:
    """He-normal convs (`mode` fan_out or fan_in), unit BN, zero conv biases; linear layers
    N(0, linear_std) with zero bias if `linear_std` is given, else PyTorch's default.

    Each builder picks what the study's phd-lab code used for that model.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode=mode, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)


class ConvNet(nn.Module):
    """The frame shared by MPNet, ResNet and DenseNet: stem -> stages -> final -> global
    average pool -> linear head (no training logic, no probe logic: the taps live inside)."""

    def __init__(self, stem: nn.Module, stages: nn.Sequential, width: int, num_classes: int,
                 final: nn.Module | None = None):
        super().__init__()
        self.stem = stem
        self.stages = stages
        self.final = final if final is not None else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.pool(self.final(self.stages(self.stem(x)))), 1))


def stem_unit(kind: str, in_channels: int, width: int, trace: Trace) -> tuple[nn.Module, Trace]:
    """'cifar': 3x3 conv unit at full resolution; 'imagenet': 7x7/2 conv unit + 3x3/2 max pool."""
    if kind == "cifar":
        return conv_unit(in_channels, width, 3, trace, Site("stem", -1, -1))
    if kind == "imagenet":
        unit, trace = conv_unit(in_channels, width, 7, trace, Site("stem", -1, -1), stride=2)
        return nn.Sequential(unit, nn.MaxPool2d(3, 2, 1)), trace.pool(3, 2, 1)
    raise ModelSpecError(f"stem={kind!r}; use 'cifar' (3x3, no pool) or 'imagenet' (7x7/2 + max pool)")
