"""Prediction without training: unproductive layers and the feasible input resolutions.

The border-layer rule (Richter et al. 2021b, rfa-toolbox): a layer that expands the receptive
field is *unproductive* at input resolution R when its input receptive field already covers
the image, r_in >= R; the first such layer of a pathway lineage is its *border layer*.
Only layers that expand the field take part (r_out > r_in: convs with k > 1 and the residual
add that stands for the block's second conv); merges of parallel pathways and 1x1 convs
integrate no new context. Linear units after a global pool see the whole image at any R by
construction (their field is traced from the feature-map size) and are the head, never
counted.

Receptive fields of conv units do not depend on R (r_l = r_{l-1} + (k_eff - 1) j_{l-1});
R enters only through the feature-map sizes, which decide whether the model can be built at
all (`ModelSpecError` when a window no longer fits). Hence, as in rfa-toolbox's
`input_resolution_range`, the resolutions with no unproductive layer are R > max r_in over
the counted layers (lower bound max r_in + 1); the upper bound is the largest output field
of a counted layer (beyond it no layer sees the whole image). The same with the smallest
field over all paths (`_min` columns: a layer counts as unproductive only when even its
shortest path covers the image).
"""

from __future__ import annotations

import pandas as pd
import torch

from flowprobe.errors import ModelSpecError
from flowprobe.models import build_model, receptive_fields

PREDICT_COLUMNS = [
    "probe_point", "stage", "block", "pathway", "position", "kind",
    "receptive_field", "input_receptive_field", "receptive_field_min", "input_receptive_field_min",
    "counted", "unproductive", "border_layer", "unproductive_min", "border_layer_min",
]
INTERVAL_COLUMNS = ["pathway", "min_resolution", "max_resolution", "min_resolution_min", "max_resolution_min"]


def model_points(spec: str, resolution: int, model_options: dict | None = None, in_channels: int = 3,
                 num_classes: int = 10) -> pd.DataFrame:
    """The receptive-field table of `spec` built (on the meta device, no memory) at `resolution`.

    Args:
        spec: model spec of the zoo, e.g. 'VGG16' or 'MPNet2(1:3x3, 4:7x7)'.
        resolution: input side length R in pixels.
        model_options: builder options (widths, stem, ...), as in a run's model_options.
        in_channels, num_classes: input channels and classes of the model.

    Returns:
        `flowprobe.models.receptive_fields` of the model, one row per probe point.

    Raises:
        ModelSpecError: the spec is unknown or R is too small for the model's downsampling.
    """
    try:
        with torch.device("meta"):
            model = build_model(spec, num_classes, in_channels=in_channels, input_size=int(resolution),
                                **(model_options or {}))
    except ModelSpecError as err:
        raise ModelSpecError(f"{spec} at {resolution} px: {err}") from None
    return receptive_fields(model, int(resolution))


def _first_per_pathway(points: pd.DataFrame, flags: pd.Series) -> pd.Series:
    """True at the first flagged point of each pathway label (forward order)."""
    first = flags & ~flags.groupby(points["pathway"]).cumsum().gt(1)
    return first & flags


def predict_layers(spec: str, resolution: int, model_options: dict | None = None, in_channels: int = 3,
                   num_classes: int = 10) -> pd.DataFrame:
    """Per probe point: receptive fields (largest and smallest over paths), unproductive flags
    and border layers per pathway lineage at `resolution` (see the module docstring).

    Args: as `model_points`.

    Returns:
        DataFrame with PREDICT_COLUMNS plus `resolution` and `model`, forward order.
    """
    points = model_points(spec, resolution, model_options, in_channels, num_classes)
    counted = (points["receptive_field"] > points["input_receptive_field"]) & (points["kind"] != "linear")
    unproductive = counted & (points["input_receptive_field"] >= resolution)
    unproductive_min = counted & (points["input_receptive_field_min"] >= resolution)
    table = points.assign(
        counted=counted,
        unproductive=unproductive,
        border_layer=_first_per_pathway(points, unproductive),
        unproductive_min=unproductive_min,
        border_layer_min=_first_per_pathway(points, unproductive_min),
    )[PREDICT_COLUMNS]
    table.insert(0, "resolution", int(resolution))
    table.insert(0, "model", spec)
    return table


def resolution_interval(layers: pd.DataFrame) -> pd.DataFrame:
    """Input resolutions with no unproductive layer, per pathway label and for the whole model.

    Args:
        layers: a `predict_layers` table.

    Returns:
        One row per pathway label and one with pathway 'all': `min_resolution` = max r_in + 1
        and `max_resolution` = max r_out over the counted layers (and the same with the
        smallest fields, `_min`). No layer is unproductive for min_resolution <= R; for
        R > max_resolution no layer sees the whole image; min > max means no such R exists.
        Bounds are <NA> for a model without counted layers (an MLP).
    """
    counted = layers[layers["counted"]]
    groups = [("all", counted), *((p, g) for p, g in counted.groupby("pathway", sort=False))]
    rows = [
        {
            "pathway": label,
            "min_resolution": group["input_receptive_field"].max() + 1,
            "max_resolution": group["receptive_field"].max(),
            "min_resolution_min": group["input_receptive_field_min"].max() + 1,
            "max_resolution_min": group["receptive_field_min"].max(),
        }
        for label, group in groups
    ]
    # a model without counted layers (an MLP) has no bound: <NA>
    return pd.DataFrame(rows, columns=INTERVAL_COLUMNS).astype({c: "Int64" for c in INTERVAL_COLUMNS[1:]})


def border_layers(layers: pd.DataFrame, field: str = "border_layer") -> dict[str, str]:
    """{pathway label: name of its border layer} of a `predict_layers` table (lineages with one)."""
    flagged = layers[layers[field]]
    return dict(zip(flagged["pathway"], flagged["probe_point"]))
