"""Receptive fields while a model is built, and the border-layer table.

Builders thread a `Trace` (receptive field + spatial side length) through every conv and
pool as they create modules, so each probe point knows its receptive field at build time:
r_l = r_{l-1} + (k_eff - 1) * j_{l-1}, j_l = j_{l-1} * s, k_eff = k + (k - 1)(d - 1)
(Araujo et al. 2019). A global average pool or a flatten is a kernel spanning the whole map
(k = n, s = n), so units after it see r + (n - 1) * j pixels, i.e. the whole input.

Border layer (Richter et al. 2021b, as rfa-toolbox's `EnrichedNetworkNode.is_border` decides
it): a layer is unproductive when the *smallest* receptive field of every path into it is
already at least the input resolution, and the same holds for its own output and for every
layer after it; the border layer of a pathway lineage is its first unproductive layer. A
layer stays productive while any path into it still sees less than the image (a skip
connection or a shallow pathway keeps it so). `border_layer` uses that smallest field;
`border_layer_max` applies the same rule to the largest field, which flowprobe used before
and which puts the border much earlier in multi-path nets (docs/experiments.md compares them).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from torch import nn

from flowprobe.errors import ModelSpecError
from flowprobe.models.base import POINT_COLUMNS, RF, ProbePoint, taps

RF_COLUMNS = [*POINT_COLUMNS[:-1], "jump", POINT_COLUMNS[-1]]
MIN_COLUMNS = ["receptive_field_min", "input_receptive_field_min", "border_layer_max"]
# which field decides `border_layer`: the smallest over all paths (rfa-toolbox, Richter et al. 2021b)
BORDER_FIELDS = {"border_layer": "receptive_field_min", "border_layer_max": "receptive_field"}


@dataclass(frozen=True)
class Trace:
    """Receptive field at one point of the network, over all paths that reach it.

    `rf` is the largest field (base.RF.merge at every merge), `rf_min` the smallest, which
    runs through skip connections and the shortest pathways (rfa-toolbox's
    receptive_field_min); `n` is the spatial side length of the feature map.
    """

    rf: RF
    rf_min: RF
    n: int

    @staticmethod
    def start(input_size: int) -> "Trace":
        return Trace(RF(), RF(), input_size)

    def conv(self, kernel: int, stride: int = 1, dilation: int = 1, padding: int | None = None) -> "Trace":
        """Conv (or pool) of `kernel`; padding defaults to 'same' (k_eff // 2)."""
        k_eff = kernel + (kernel - 1) * (dilation - 1)
        pad = k_eff // 2 if padding is None else padding
        n_out = (self.n + 2 * pad - k_eff) // stride + 1
        if n_out < 1:
            raise ModelSpecError(
                f"a {kernel}x{kernel} window (stride {stride}) does not fit a {self.n}x{self.n} "
                "feature map; the input size is too small for this model, use a larger input_size"
            )
        return Trace(self.rf.conv(kernel, stride, dilation), self.rf_min.conv(kernel, stride, dilation), n_out)

    def pool(self, kernel: int, stride: int, padding: int = 0) -> "Trace":
        return self.conv(kernel, stride, 1, padding)

    def global_pool(self) -> "Trace":
        """Global average pool / flatten: one window over the whole n x n map."""
        return self.conv(self.n, self.n, 1, 0)

    @staticmethod
    def merge(*traces: "Trace") -> "Trace":
        """Sum or concat of aligned branches; sizes must agree."""
        sizes = {t.n for t in traces}
        if len(sizes) != 1:
            raise ModelSpecError(f"merged branches have different spatial sizes {sorted(sizes)}")
        smallest = min((t.rf_min for t in traces), key=lambda f: (f.size, f.jump))
        return Trace(RF.merge(*(t.rf for t in traces)), smallest, traces[0].n)


@dataclass(frozen=True)
class Site:
    """Where a probe point sits: its name and place in the stage/block/pathway grid."""

    name: str
    stage: int
    block: int
    pathway: str = "trunk"
    position: int = 0

    def point(self, kind: str, before: Trace, after: Trace) -> ProbePoint:
        """ProbePoint of a unit mapping the field `before` (its input) to `after` (its output)."""
        if "/" in self.name or not self.name:
            raise ValueError(f"probe point name {self.name!r} must be non-empty and free of '/' (HDF5 groups)")
        return ProbePoint(
            name=self.name,
            stage=self.stage,
            block=self.block,
            pathway=self.pathway,
            position=self.position,
            kind=kind,
            receptive_field=after.rf.size,
            input_receptive_field=before.rf.size,
            jump=after.rf.jump,
            receptive_field_min=after.rf_min.size,
            input_receptive_field_min=before.rf_min.size,
        )


def _downstream(points: list[ProbePoint], i: int) -> list[ProbePoint]:
    """Points after points[i] that its output reaches: all later ones except the parallel
    pathways of its own block (they share the block input, not its output)."""
    here = points[i]
    return [
        q for q in points[i + 1:]
        if not ((q.stage, q.block) == (here.stage, here.block) and "trunk" not in (q.pathway, here.pathway)
                and q.pathway != here.pathway)
    ]


def unproductive_flags(points: list[ProbePoint], input_size: int, field: str = "receptive_field_min") -> list[bool]:
    """rfa-toolbox's `is_border` per point: its input field, its own field and the field of
    every point downstream are all >= `input_size`.

    `field` is 'receptive_field_min' (smallest field over all paths, the rule we follow) or
    'receptive_field' (largest); the input field is the matching `input_...` attribute.
    """
    if field not in BORDER_FIELDS.values():
        raise ValueError(f"field={field!r}; use one of {sorted(BORDER_FIELDS.values())}")

    def value(p: ProbePoint, key: str) -> float:
        v = getattr(p, key)
        return -1 if v is None else v

    flags = []
    for i, p in enumerate(points):
        covered = value(p, f"input_{field}") >= input_size and value(p, field) >= input_size
        flags.append(covered and all(value(q, field) >= input_size for q in _downstream(points, i)))
    return flags


def border_flags(points: list[ProbePoint], input_size: int, field: str = "receptive_field_min") -> list[bool]:
    """True at the first unproductive point (`unproductive_flags`) of each pathway lineage.

    A lineage is all points sharing a pathway label (`trunk`, `branch`, `min`, `max`, `p0`...),
    in forward order; lineages with no unproductive point have no border layer. `field`:
    'receptive_field_min' (default, `border_layer`) or 'receptive_field' (`border_layer_max`).
    """
    seen: set[str] = set()
    flags = []
    for p, unproductive in zip(points, unproductive_flags(points, input_size, field)):
        is_border = unproductive and p.pathway not in seen
        if is_border:
            seen.add(p.pathway)
        flags.append(is_border)
    return flags


def receptive_fields(model: nn.Module, input_size: int | None = None) -> pd.DataFrame:
    """One row per probe point (forward order) with its receptive fields and border flags.

    Columns: RF_COLUMNS, then receptive_field_min, input_receptive_field_min and
    border_layer_max. `border_layer` decides on the smallest field over all paths (rfa-toolbox),
    `border_layer_max` on the largest. Receptive fields of conv units do not depend on the input
    size; those of units after a global pool were traced at `model.input_size`. `input_size`
    (default: the size the model was built for) sets the border-layer rule.

    Args:
        model: a model from `build_model`.
        input_size: image side length the border layers are computed for.

    Returns:
        DataFrame with one row per probe point.
    """
    size = int(input_size or getattr(model, "input_size", 32))
    points = [t.point for t in taps(model)]
    border = border_flags(points, size, BORDER_FIELDS["border_layer"])
    border_max = border_flags(points, size, BORDER_FIELDS["border_layer_max"])
    rows = [
        {
            "probe_point": p.name,
            "stage": p.stage,
            "block": p.block,
            "pathway": p.pathway,
            "position": p.position,
            "kind": p.kind,
            "receptive_field": p.receptive_field,
            "input_receptive_field": p.input_receptive_field,
            "jump": p.jump,
            "border_layer": flag,
            "receptive_field_min": p.receptive_field_min,
            "input_receptive_field_min": p.input_receptive_field_min,
            "border_layer_max": flag_max,
        }
        for p, flag, flag_max in zip(points, border, border_max)
    ]
    return pd.DataFrame(rows, columns=RF_COLUMNS + MIN_COLUMNS)
