"""AlainMLP: the study's long-skip MLP (phd-lab `AlainFC`, after Alain & Bengio 2016).

x (flattened C*H*W) -> fc1 (width) -> `span` hidden layers of `width`, wrapped by ONE skip
connection that adds fc1's output back after them -> `depth` more layers -> linear head.
Every hidden layer is Linear -> ReLU. Probe points: fc1 (trunk), fc2..fc{1+span} (the span
the skip bypasses: pathway `branch`, stage 1, block 0, positions 0..span-1), `add` (where the
skip rejoins, trunk), fc{2+span}..fc{1+span+depth} (trunk). Zeroing fc{1+span}'s tap
(Tap.ablate) removes the span: `add` then equals fc1's output.
phd-lab fed only the first input channel (784 inputs on MNIST); with in_channels=1 that is
the same network.
"""

from __future__ import annotations

import torch
from torch import nn

from flowprobe.errors import ModelSpecError
from flowprobe.models.base import Tap
from flowprobe.models.receptive import Site, Trace
from flowprobe.models.units import linear_unit


class AlainMLP(nn.Module):
    def __init__(self, first: nn.Module, span: nn.Sequential, add_tap: Tap, tail: nn.Sequential,
                 head: nn.Linear):
        super().__init__()
        self.first = first
        self.span = span
        self.add_tap = add_tap
        self.tail = tail
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.first(torch.flatten(x, 1))
        return self.head(self.tail(self.add_tap(first + self.span(first))))


def build_alain_mlp(num_classes: int, in_channels: int = 1, input_size: int = 28, width: int = 128,
                    span: int = 128, depth: int = 8) -> AlainMLP:
    """The long-skip MLP; `span` layers are skipped, `depth` layers follow the skip."""
    if width < 1 or span < 1 or depth < 0:
        raise ModelSpecError(
            f"AlainMLP width={width}, span={span}, depth={depth}; need width >= 1, span >= 1, depth >= 0"
        )
    trace = Trace.start(input_size)
    first, trace = linear_unit(in_channels * input_size * input_size, width, trace, Site("fc1", 0, 0))
    skipped = []
    for i in range(span):
        unit, trace = linear_unit(width, width, trace, Site(f"fc{i + 2}", 1, 0, "branch", i))
        skipped.append(unit)
    add_tap = Tap(Site("add", 1, 0, "trunk", 1).point("add", trace, trace))
    tail = []
    for i in range(depth):
        unit, trace = linear_unit(width, width, trace, Site(f"fc{span + 2 + i}", 2, 0, "trunk", 2 + i))
        tail.append(unit)
    return AlainMLP(first, nn.Sequential(*skipped), add_tap, nn.Sequential(*tail), nn.Linear(width, num_classes))
