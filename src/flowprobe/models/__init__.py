"""The model zoo: a registry of builders keyed by spec strings (docs/design.md §2).

`build_model("VGG16", 10)`, `build_model("MPNet2(1:3x3,4:7x7)", 10, widths=(16, 32, 64, 128))`.
Every model exposes its probe points as `Tap` modules in forward order.
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Callable

from torch import nn

from flowprobe.errors import ModelSpecError
from flowprobe.models.base import RF, ProbePoint, Tap, probe_points, taps
from flowprobe.models.densenet import build_densenet18
from flowprobe.models.mlp import build_alain_mlp
from flowprobe.models.mpnet import GRAMMAR, MPNetSpec, build_mpnet, parse_mpnet
from flowprobe.models.receptive import border_flags, receptive_fields
from flowprobe.models.resnet import build_resnet
from flowprobe.models.traced import PREFIXES, is_traced_spec, traced_builder
from flowprobe.models.vgg import build_vgg16

__all__ = [
    "MODEL_FAMILIES", "MPNetSpec", "ProbePoint", "RF", "Tap", "border_flags", "build_model",
    "check_spec", "parse_mpnet", "probe_points", "receptive_fields", "taps",
]

REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "VGG16": build_vgg16,
    "ResNet18": partial(build_resnet, "ResNet18"),
    "ResNet34": partial(build_resnet, "ResNet34"),
    "DenseNet18": build_densenet18,
    "AlainMLP": build_alain_mlp,
}
MODEL_FAMILIES = [*REGISTRY, "MPNet{K}(...)", *(f"{p}..." for p in PREFIXES)]
_BUILD_ARGS = {"num_classes", "in_channels", "input_size"}


def _builder(spec: str) -> Callable[..., nn.Module]:
    if spec in REGISTRY:
        return REGISTRY[spec]
    if spec.startswith("MPNet"):
        parse_mpnet(spec)
        return partial(build_mpnet, spec)
    if is_traced_spec(spec):
        return traced_builder(spec)
    raise ModelSpecError(
        f"unknown model {spec!r} (names are case-sensitive); use one of {', '.join(REGISTRY)} "
        f"or an MPNet spec {GRAMMAR}, or torchvision:NAME / import:package.module:factory"
    )


def check_spec(spec: str) -> None:
    """Raise ModelSpecError if `spec` names no model; builds nothing."""
    if not isinstance(spec, str):
        raise ModelSpecError(f"model spec must be a string, got {spec!r}; e.g. 'VGG16'")
    _builder(spec)


def model_options(spec: str) -> list[str]:
    """Keyword options the builder of `spec` accepts besides num_classes/in_channels/input_size."""
    params = inspect.signature(_builder(spec)).parameters
    return [name for name in params if name not in _BUILD_ARGS]


def build_model(spec: str, num_classes: int, in_channels: int = 3, input_size: int = 32, **kw) -> nn.Module:
    """Build the model named by `spec`; sets `model.spec`, `model.input_size`, `model.in_channels`."""
    check_spec(spec)
    for name, value in (("num_classes", num_classes), ("in_channels", in_channels), ("input_size", input_size)):
        if not isinstance(value, int) or value < 1:
            raise ModelSpecError(f"{spec}: {name}={value!r}; it must be a positive integer")
    allowed = model_options(spec)
    unknown = sorted(set(kw) - set(allowed))
    if unknown and not is_traced_spec(spec):  # traced builders pass options on and check them
        raise ModelSpecError(f"{spec} has no option(s) {unknown}; its options are {allowed}")
    model = _builder(spec)(num_classes=num_classes, in_channels=in_channels, input_size=input_size, **kw)
    model.spec = spec
    model.input_size = input_size
    model.in_channels = in_channels
    model.num_classes = num_classes
    return model
