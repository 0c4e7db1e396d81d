"""VGG16 with batch norm, CIFAR variant (as in the study's phd-lab `models/vgg.py`).

Thirteen 3x3 conv units (configuration D) in five stages separated by 2x2 max pools, then an
adaptive average pool to 1x1 (so any input size >= 32 works) and the phd-lab classifier:
BN1d -> Dropout(0.25) -> Linear(512, 256) -> ReLU -> BN1d -> Dropout(0.25) -> Linear(256, classes).
Probe points: conv1..conv13 and fc1.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from flowprobe.errors import ModelSpecError
from flowprobe.models.receptive import Site, Trace
from flowprobe.models.units import conv_unit, init_weights, linear_unit

CONVS_PER_STAGE = (2, 2, 3, 3, 3)


class VGG(nn.Module):
    def __init__(self, features: nn.Sequential, classifier: nn.Sequential):
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def build_vgg16(num_classes: int, in_channels: int = 3, input_size: int = 32,
                widths=(64, 128, 256, 512, 512), fc_width: int | None = None, keep_convs: int | None = None) -> VGG:
    """VGG16-BN; `widths` are the five stage widths, `fc_width` the hidden linear (default widths[-1] // 2).

    `keep_convs` (1..13, default all) keeps the first convs only and puts the head right after
    them (Richter et al. 2021b: the tail replaced by the head); a completed stage keeps its pool.
    """
    widths = tuple(widths)
    if len(widths) != 5 or not all(isinstance(w, int) and w >= 1 for w in widths):
        raise ModelSpecError(f"VGG16 option widths={widths!r}; give 5 positive integers, one per stage")
    total = sum(CONVS_PER_STAGE)
    keep = total if keep_convs is None else keep_convs
    if not isinstance(keep, int) or not 1 <= keep <= total:
        raise ModelSpecError(f"VGG16 option keep_convs={keep_convs!r}; give an integer from 1 to {total}")
    fc_width = fc_width or widths[-1] // 2
    layers, trace, c_in, index = OrderedDict(), Trace.start(input_size), in_channels, 0
    for stage, (n_convs, width) in enumerate(zip(CONVS_PER_STAGE, widths)):
        for _ in range(min(n_convs, keep - index)):
            site = Site(f"conv{index + 1}", stage, 0, "trunk", index)
            layers[site.name], trace = conv_unit(c_in, width, 3, trace, site, bias=True)
            c_in, index = width, index + 1
        if index == sum(CONVS_PER_STAGE[: stage + 1]):
            layers[f"pool{stage + 1}"] = nn.MaxPool2d(2, 2)
            trace = trace.pool(2, 2)
    trace = trace.global_pool()
    fc1, _ = linear_unit(c_in, fc_width, trace, Site("fc1", len(widths), 0, "trunk", index))
    classifier = nn.Sequential(
        nn.BatchNorm1d(c_in), nn.Dropout(0.25), fc1,
        nn.BatchNorm1d(fc_width), nn.Dropout(0.25), nn.Linear(fc_width, num_classes),
    )
    model = VGG(nn.Sequential(layers), classifier)
    init_weights(model, linear_std=0.01)  # phd-lab's VGG initialisation
    return model
