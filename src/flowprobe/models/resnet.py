"""ResNet18/34 with BasicBlocks (He et al. 2016), CIFAR stem by default.

stem='cifar': 3x3 conv -> BN -> ReLU, no max pool (the usual CIFAR variant).
stem='imagenet': 7x7/2 conv -> BN -> ReLU -> 3x3/2 max pool, as in the study's phd-lab
`models/resnet.py`, which trained this ImageNet stem on 32x32 CIFAR-10 too.
A block: conv -> BN -> ReLU [probe point `conv`] -> conv -> BN [probe point `branch`, the
residual branch output before the add], plus the shortcut (identity, or 1x1 conv -> BN when the
shape changes), then ReLU [probe point `add`]. `conv` and `branch` lie inside the unit the
shortcut bypasses: pathway `branch`, positions 0 and 1; `add` is a trunk point. Zeroing the
`branch` tap (Tap.ablate) removes the residual branch: the block computes relu(shortcut(x)).
"""

from __future__ import annotations

import torch
from torch import nn

from flowprobe.errors import ModelSpecError
from flowprobe.models.base import Tap
from flowprobe.models.receptive import Site, Trace
from flowprobe.models.units import ConvNet, conv_unit, init_weights, stem_unit

BLOCKS = {"ResNet18": (2, 2, 2, 2), "ResNet34": (3, 4, 6, 3)}


class BasicBlock(nn.Module):
    def __init__(self, first: nn.Module, conv: nn.Conv2d, branch_tap: Tap, shortcut: nn.Module, tap: Tap):
        super().__init__()
        self.first = first
        self.conv = conv
        self.bn = nn.BatchNorm2d(conv.out_channels)
        self.branch_tap = branch_tap
        self.shortcut = shortcut
        self.relu = nn.ReLU()
        self.tap = tap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch_tap(self.bn(self.conv(self.first(x))))
        return self.tap(self.relu(out + self.shortcut(x)))


def _block(c_in: int, width: int, stride: int, trace: Trace, s: int, b: int,
           position: int) -> tuple[BasicBlock, Trace]:
    """One BasicBlock; `position` is the add point's place along the trunk."""
    first, mid = conv_unit(c_in, width, 3, trace, Site(f"s{s}.b{b}.conv", s, b, "branch", 0), stride)
    conv = nn.Conv2d(width, width, 3, padding=1, bias=False)
    branch = mid.conv(3)
    branch_tap = Tap(Site(f"s{s}.b{b}.branch", s, b, "branch", 1).point("conv", mid, branch))
    if stride != 1 or c_in != width:
        shortcut = nn.Sequential(nn.Conv2d(c_in, width, 1, stride, bias=False), nn.BatchNorm2d(width))
    else:
        shortcut = nn.Identity()
    merged = Trace.merge(branch, trace.conv(1, stride))
    add = Site(f"s{s}.b{b}.add", s, b, "trunk", position).point("add", merged, merged)
    return BasicBlock(first, conv, branch_tap, shortcut, Tap(add)), merged


def build_resnet(name: str, num_classes: int, in_channels: int = 3, input_size: int = 32,
                 widths=(64, 128, 256, 512), stem: str = "cifar", blocks=None) -> ConvNet:
    """ResNet18 or ResNet34; stage s > 0 halves the resolution in its first block.

    `blocks` (4 integers >= 0, default the model's (2,2,2,2) or (3,4,6,3)) sets the blocks per
    stage, e.g. a pruned net without its last blocks; the head follows the last block kept.
    """
    widths = tuple(widths)
    if len(widths) != 4 or not all(isinstance(w, int) and w >= 1 for w in widths):
        raise ModelSpecError(f"{name} option widths={widths!r}; give 4 positive integers, one per stage")
    per_stage = tuple(BLOCKS[name] if blocks is None else blocks)
    if len(per_stage) != 4 or not all(isinstance(n, int) and n >= 0 for n in per_stage) or not any(per_stage):
        raise ModelSpecError(f"{name} option blocks={blocks!r}; give 4 integers >= 0 (not all 0), one per stage")
    stem_module, trace = stem_unit(stem, in_channels, widths[0], Trace.start(input_size))
    blocks, c_in, position = [], widths[0], 1
    for s, (n_blocks, width) in enumerate(zip(per_stage, widths)):
        for b in range(n_blocks):
            stride = 2 if s > 0 and b == 0 else 1
            block, trace = _block(c_in, width, stride, trace, s, b, position)
            blocks.append(block)
            c_in, position = width, position + 1
    model = ConvNet(stem_module, nn.Sequential(*blocks), c_in, num_classes)
    init_weights(model)
    return model
