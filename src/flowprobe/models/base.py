"""Probe points and receptive-field bookkeeping shared by every model.

A model marks each probe point with a `Tap` module placed right after the unit's
nonlinearity (or after a merge). Taps are identities in the forward pass; hooks on them
capture activations and gradients, and `Tap.ablate` zeroes a pathway before its merge.
Models register their taps in forward order, so `probe_points(model)` is that order.

Receptive fields follow r_l = r_{l-1} + (k_eff - 1) * j_{l-1}, j_l = j_{l-1} * s,
k_eff = k + (k - 1)(d - 1) (Araujo et al. 2019; Richter et al. 2021b).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn


# The probe-point metadata every analysis table carries (h5io.point_frame), in this order.
POINT_COLUMNS = [
    "probe_point",
    "stage",
    "block",
    "pathway",
    "position",
    "kind",
    "receptive_field",
    "input_receptive_field",
    "border_layer",
]


@dataclass(frozen=True)
class RF:
    """Receptive field `size` and `jump` (product of strides) at a point of the network."""

    size: int = 1
    jump: int = 1

    def conv(self, kernel: int, stride: int = 1, dilation: int = 1) -> "RF":
        k_eff = kernel + (kernel - 1) * (dilation - 1)
        return RF(self.size + (k_eff - 1) * self.jump, self.jump * stride)

    @staticmethod
    def merge(*fields: "RF") -> "RF":
        """RF of a sum/concat of aligned branches: the union, i.e. the largest branch."""
        return RF(max(f.size for f in fields), max(f.jump for f in fields))


@dataclass(frozen=True)
class ProbePoint:
    """One place in the network where information is measured."""

    name: str
    stage: int
    block: int
    # trunk | branch (inside a unit a skip connection bypasses) | min | max | p0..pN (MPNet pathways)
    pathway: str
    position: int  # index along the pathway/branch inside its block (trunk: along the trunk)
    kind: str  # conv | linear | merge | concat | add
    receptive_field: int  # RF of this point's output
    input_receptive_field: int  # RF of this unit's input (border-layer rule)
    jump: int
    shape: tuple[int, ...] | None = None  # (C, H, W) or (D,), filled by probe_points()
    # smallest RF over all paths through skips/pathways (rfa-toolbox's receptive_field_min)
    receptive_field_min: int | None = None
    input_receptive_field_min: int | None = None
    # border-layer flags at the model's input size (smallest / largest field rule), filled by probe_points()
    border_layer: bool | None = None
    border_layer_max: bool | None = None

    def attrs(self) -> dict:
        """HDF5 attributes of this probe point (docs/design.md §4); unset min-RF fields are left out."""
        attrs = {
            "stage": self.stage,
            "block": self.block,
            "pathway": self.pathway,
            "position": self.position,
            "kind": self.kind,
            "receptive_field": self.receptive_field,
            "input_receptive_field": self.input_receptive_field,
            "jump": self.jump,
            "shape": list(self.shape or ()),
        }
        for key in ("receptive_field_min", "input_receptive_field_min", "border_layer", "border_layer_max"):
            if getattr(self, key) is not None:
                attrs[key] = getattr(self, key)
        return attrs


class Tap(nn.Identity):
    """Identity module that marks a probe point; `ablate=True` zeroes its output."""

    def __init__(self, point: ProbePoint):
        super().__init__()
        self.point = point
        self.ablate = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x) if self.ablate else x

    def extra_repr(self) -> str:
        return self.point.name


def taps(model: nn.Module) -> list[Tap]:
    """The model's taps in registration (= forward) order."""
    return [m for m in model.modules() if isinstance(m, Tap)]


@torch.no_grad()
def probe_points(model: nn.Module, input_size: int | None = None) -> list[ProbePoint]:
    """Ordered probe points of `model`, with output shapes traced at `input_size` and the
    border-layer flags for that size (models.receptive: `border_layer`, `border_layer_max`).

    `input_size` defaults to the size the model was built for (`model.input_size`).
    """
    from flowprobe.models.receptive import BORDER_FIELDS, border_flags  # receptive imports this module

    size = input_size or getattr(model, "input_size", 32)
    in_channels = getattr(model, "in_channels", 3)
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [
        t.register_forward_hook(lambda m, i, o: shapes.__setitem__(m.point.name, tuple(o.shape[1:])))
        for t in taps(model)
    ]
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        model(torch.zeros(1, in_channels, size, size, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    points = [t.point for t in taps(model)]
    flags = {column: border_flags(points, size, field) for column, field in BORDER_FIELDS.items()}
    return [
        replace(p, shape=shapes.get(p.name), **{column: flags[column][i] for column in flags})
        for i, p in enumerate(points)
    ]
