"""Verdicts the study gave in prose, computed from probe accuracies and receptive fields.

Layer level (every probe point, forward order):
- `tail`: predicted when the layer's *input* receptive field already covers the image
  (input RF >= resolution: the border-layer rule of Richter et al. 2021b); observed when the
  layer's probe accuracy does not exceed the best accuracy of any earlier probe point by more
  than `layer_tol`.
- `skipped`: observed when a layer inside a block (a pathway, residual branch or skipped span)
  has probe accuracy more than `layer_tol` below the block's input (the trunk point before
  the block); predicted for every layer inside a block that a parallel path or skip bypasses.

Pathway level (multi-path models): a pathway's gain in a block is the probe accuracy at its
last layer minus the accuracy at the block input, averaged over blocks. If the pathways'
mean gains differ by at most `pathway_tol` they are `coexisting`; otherwise the one with the
larger gain is `dominant` and the others `non-dominant`. The prediction from the architecture:
the shallower pathway (fewer layers per block) dominates when it is at most half as deep as
the other; pathways of similar depth coexist.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LAYER_TOL = 0.005  # 0.5 accuracy points
PATHWAY_TOL = 0.01  # 1 accuracy point
DEPTH_RATIO = 2.0


def block_inputs(points: pd.DataFrame) -> pd.Series:
    """For every probe point, the name of the trunk point feeding its block (itself for trunk)."""
    inputs, last_trunk, current, block_start = [], None, None, None
    for row in points.itertuples():
        if row.pathway == "trunk":
            last_trunk, current = row.probe_point, None
            inputs.append(row.probe_point)
            continue
        key = (row.stage, row.block)
        if key != current:
            current, block_start = key, last_trunk
        inputs.append(block_start if block_start is not None else row.probe_point)
    return pd.Series(inputs, index=points.index)


def layer_verdicts(points: pd.DataFrame, resolution: int, tol: float = LAYER_TOL) -> pd.DataFrame:
    """Per probe point: predicted/observed `tail` and `skipped` (one run × seed, forward order)."""
    points = points.reset_index(drop=True)
    acc = points["test_acc"].to_numpy()
    best_before = np.concatenate([[-np.inf], np.maximum.accumulate(acc)[:-1]])
    feeding = block_inputs(points)
    acc_by_name = dict(zip(points["probe_point"], acc))
    input_acc = feeding.map(acc_by_name).to_numpy()
    inside = (points["pathway"] != "trunk").to_numpy()
    return pd.DataFrame(
        {
            "probe_point": points["probe_point"],
            "pathway": points["pathway"],
            "test_acc": acc,
            "block_input": feeding,
            "tail_predicted": points["input_receptive_field"].to_numpy() >= resolution,
            "tail_observed": acc <= best_before + tol,
            "skipped_predicted": inside,
            "skipped_observed": inside & (acc < input_acc - tol),
        }
    )


def pathway_verdicts(points: pd.DataFrame, tol: float = PATHWAY_TOL, depth_ratio: float = DEPTH_RATIO) -> pd.DataFrame:
    """Per pathway label of a multi-path model: mean gain, predicted and observed role."""
    points = points.reset_index(drop=True)
    points = points.assign(block_input=block_inputs(points))
    acc_by_name = dict(zip(points["probe_point"], points["test_acc"]))
    branch = points[points["pathway"] != "trunk"]
    per_block = branch.groupby(["stage", "block", "pathway"], sort=False).agg(
        last_acc=("test_acc", "last"), block_input=("block_input", "first"), depth=("position", "size")
    )
    multi = per_block.groupby(level=["stage", "block"]).size() > 1
    per_block = per_block[per_block.index.droplevel("pathway").isin(multi[multi].index)]
    if per_block.empty:
        return pd.DataFrame(columns=["pathway", "mean_gain", "depth", "predicted", "observed"])
    per_block = per_block.assign(gain=per_block["last_acc"] - per_block["block_input"].map(acc_by_name))
    summary = per_block.groupby(level="pathway", sort=False).agg(mean_gain=("gain", "mean"), depth=("depth", "mean"))
    best, shallowest = summary["mean_gain"].max(), summary["depth"].min()
    coexist = summary["mean_gain"].max() - summary["mean_gain"].min() <= tol
    observed = ["coexisting" if coexist else ("dominant" if g == best else "non-dominant") for g in summary["mean_gain"]]
    similar = summary["depth"].max() < depth_ratio * shallowest
    predicted = ["coexisting" if similar else ("dominant" if d == shallowest else "non-dominant") for d in summary["depth"]]
    return summary.reset_index().assign(predicted=predicted, observed=observed)


def verdict_table(probes: pd.DataFrame, resolutions: dict[str, int], layer_tol: float = LAYER_TOL,
                  pathway_tol: float = PATHWAY_TOL) -> pd.DataFrame:
    """Long verdict table over runs × seeds of `probes` (a figure table with probe columns)."""
    rows = []
    for (run, seed, model), points in probes.groupby(["run", "seed", "model"], sort=False):
        layers = layer_verdicts(points, resolutions[run], layer_tol)
        parts = [
            layers[["probe_point", "pathway", "test_acc"]].assign(
                level="layer", verdict=verdict, predicted=layers[f"{verdict}_predicted"],
                observed=layers[f"{verdict}_observed"], threshold=layer_tol,
            )
            for verdict in ("tail", "skipped")
        ]
        paths = pathway_verdicts(points, pathway_tol)
        if len(paths):
            parts.append(paths.assign(level="pathway", verdict="role", probe_point="", threshold=pathway_tol))
        rows += [part.assign(run=run, seed=seed, model=model) for part in parts]
    table = pd.concat(rows, ignore_index=True)
    table["agree"] = table["predicted"] == table["observed"]
    columns = ["run", "seed", "model", "level", "verdict", "probe_point", "pathway", "predicted", "observed",
               "agree", "threshold", "test_acc", "mean_gain", "depth"]
    return table.reindex(columns=columns)
