"""DenseNet18 (DenseNet-BC of Huang et al. 2017 with dense blocks 4-4-4-4, as in phd-lab).

Growth rate 32, 64 initial features, bottleneck layers BN -> ReLU -> Conv1x1(4k) ->
BN -> ReLU -> Conv3x3(k), transitions BN -> ReLU -> Conv1x1 (compression 0.5) -> AvgPool 2,
final BN -> ReLU -> global average pool -> linear.
stem='cifar': 3x3 conv -> BN -> ReLU; stem='imagenet': 7x7/2 conv -> BN -> ReLU -> 3x3/2 max
pool, which is what the study's phd-lab `models/densenet.py` trained on 32x32 CIFAR-10.
Probe points per dense layer: `bottleneck` (after the second ReLU) and `new` (the 3x3 conv's
output: the growth-rate channels the layer adds), pathway `branch`, positions 0 and 1, since
the concatenation bypasses the layer; `cat` (the layer's input concatenated with its new
features), a trunk point. Per transition: `trans` (after the pool, trunk). The study probed
each layer's new features; the concatenation keeps the block input, so its probe accuracy
cannot decay inside a skipped block. Zeroing the `new` tap (Tap.ablate) removes the layer:
it adds zeros.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from flowprobe.errors import ModelSpecError
from flowprobe.models.base import Tap
from flowprobe.models.receptive import Site, Trace
from flowprobe.models.units import ConvNet, conv_unit, init_weights, stem_unit

LAYERS_PER_BLOCK = (4, 4, 4, 4)
BOTTLENECK = 4  # bottleneck width = 4 * growth rate


class DenseLayer(nn.Module):
    def __init__(self, c_in: int, growth: int, bottleneck_tap: Tap, new_tap: Tap, cat_tap: Tap):
        super().__init__()
        width = BOTTLENECK * growth
        self.bottleneck = nn.Sequential(OrderedDict(
            bn1=nn.BatchNorm2d(c_in), relu1=nn.ReLU(), conv1=nn.Conv2d(c_in, width, 1, bias=False),
            bn2=nn.BatchNorm2d(width), relu2=nn.ReLU(), tap=bottleneck_tap,
        ))
        self.conv2 = nn.Conv2d(width, growth, 3, padding=1, bias=False)
        self.new_tap = new_tap
        self.tap = cat_tap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tap(torch.cat([x, self.new_tap(self.conv2(self.bottleneck(x)))], 1))


def _transition(c_in: int, trace: Trace, s: int, position: int) -> tuple[nn.Module, Trace]:
    after = trace.conv(1).pool(2, 2)
    tap = Tap(Site(f"s{s}.trans", s, LAYERS_PER_BLOCK[s], "trunk", position).point("conv", trace, after))
    module = nn.Sequential(OrderedDict(
        bn=nn.BatchNorm2d(c_in), relu=nn.ReLU(), conv=nn.Conv2d(c_in, c_in // 2, 1, bias=False),
        pool=nn.AvgPool2d(2, 2), tap=tap,
    ))
    return module, after


def build_densenet18(num_classes: int, in_channels: int = 3, input_size: int = 32,
                     growth_rate: int = 32, init_features: int = 64, stem: str = "cifar") -> ConvNet:
    """DenseNet18; `growth_rate` and `init_features` shrink it for tests."""
    if growth_rate < 1 or init_features < 1:
        raise ModelSpecError("DenseNet18 growth_rate and init_features must be >= 1")
    stem_module, trace = stem_unit(stem, in_channels, init_features, Trace.start(input_size))
    modules, c, position = OrderedDict(), init_features, 1
    for s, n_layers in enumerate(LAYERS_PER_BLOCK):
        for b in range(n_layers):
            neck, new = trace.conv(1), trace.conv(1).conv(3)
            grown = Trace.merge(trace, new)
            neck_tap = Tap(Site(f"s{s}.b{b}.bottleneck", s, b, "branch", 0).point("conv", trace, neck))
            new_tap = Tap(Site(f"s{s}.b{b}.new", s, b, "branch", 1).point("conv", neck, new))
            cat_tap = Tap(Site(f"s{s}.b{b}.cat", s, b, "trunk", position).point("concat", grown, grown))
            modules[f"s{s}_b{b}"] = DenseLayer(c, growth_rate, neck_tap, new_tap, cat_tap)
            trace, c, position = grown, c + growth_rate, position + 1
        if s < len(LAYERS_PER_BLOCK) - 1:
            modules[f"s{s}_trans"], trace = _transition(c, trace, s, position)
            c, position = c // 2, position + 1
    model = ConvNet(stem_module, nn.Sequential(modules), c, num_classes,
                    final=nn.Sequential(nn.BatchNorm2d(c), nn.ReLU()))
    init_weights(model, mode="fan_in")  # phd-lab / torchvision DenseNet initialisation
    return model
