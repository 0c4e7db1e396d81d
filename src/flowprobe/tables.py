"""Aggregating per-run analysis CSVs into one long table per figure.

One row per run × seed × probe point (or per heatmap cell / ablation target), with the run's
model spec and final test accuracy, so a figure is drawn from its table alone.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from flowprobe.figures import FigureKind


def final_test_accuracy(train_log: str) -> tuple[float, bool]:
    """(test accuracy after the last finished epoch, whether training diverged).

    A run recorded as diverged (`train.on_divergence: record`) ends with a NaN row flagged
    `diverged`; its accuracy is the last finished epoch's (NaN if none finished)."""
    log = pd.read_csv(train_log)
    diverged = bool(log["diverged"].fillna(0).astype(bool).any()) if "diverged" in log else False
    finished = log["test_acc"].dropna()
    return (float(finished.iloc[-1]) if len(finished) else float("nan")), diverged


def merge_point_tables(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Join analyses of one run on the probe-point metadata; the first table wins on clashes.

    Args:
        frames: one run's per-probe-point CSVs (probes.csv first).

    Returns:
        One row per probe point of the first frame, with the other frames' extra columns.
    """
    # Imported here: flowprobe.h5io pulls in torch, and the Snakefile imports this module to parse.
    from flowprobe.h5io import POINT_COLUMNS

    merged = frames[0]
    for frame in frames[1:]:
        keys = [c for c in POINT_COLUMNS if c in merged and c in frame]
        extra = [c for c in frame.columns if c not in merged.columns]
        merged = merged.merge(frame[keys + extra], on=keys, how="left", validate="one_to_one")
    return merged


def _kind(kind: FigureKind | str) -> FigureKind:
    """A registered kind from its name (the registry imports this module, hence the late import)."""
    from flowprobe.figures import figure_kind

    return figure_kind(kind) if isinstance(kind, str) else kind


def first_table(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One run's rows are its single analysis file as written (heatmap cells, ablation targets)."""
    return frames[0]


PRUNED_SPEC = "pruned_spec.json"


def member_model(member: dict) -> str:
    """The model label of a member: the config's spec, or for an observed prune (model None) the
    spec its pruned_spec.json names, which its training built (model.pt's record holds the same;
    table jobs run without torch, so they read the JSON)."""
    if member["model"] is not None:
        return member["model"]
    with open(member["files"][PRUNED_SPEC]) as fh:
        return json.load(fh)["model"]


def figure_table(kind: FigureKind | str, members: list[dict]) -> pd.DataFrame:
    """Long table of a figure.

    Args:
        kind: the figure's kind or its name (`flowprobe.figures.KINDS`): which files, which builder.
        members: one dict per run × seed: {run, seed, model, files: {file name: path}}; model
            None: read from files["pruned_spec.json"] (an observed prune, `member_model`).

    Returns:
        The rows of every member (built by `kind.table`), led by run, seed, model, the run's
        final test accuracy and whether it diverged.
    """
    kind = _kind(kind)
    rows = []
    for member in members:
        files = member["files"]
        table = kind.table([pd.read_csv(files[name]) for name in kind.inputs])
        accuracy, diverged = final_test_accuracy(files["train_log.csv"])
        label = {
            "run": member["run"],
            "seed": member["seed"],
            "model": member_model(member),
            "test_accuracy": accuracy,
            "diverged": diverged,
            "resolution": member.get("resolution"),
        }
        for i, (col, value) in enumerate(label.items()):
            table.insert(i, col, value)
        rows.append(table)
    return pd.concat(rows, ignore_index=True)


def summarise(kind: FigureKind | str, table: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of a figure table's values (std is NaN for a single seed).

    Args:
        kind: the figure's kind or its name; its summary_keys group the rows, its summary_values
            are averaged.
        table: the figure table of `figure_table`.

    Returns:
        One row per group: n_seeds, then <value>_mean and <value>_std per value and test accuracy.
    """
    kind = _kind(kind)
    keys, values = list(kind.summary_keys), list(kind.summary_values)
    grouped = table.groupby(keys, sort=False, dropna=False)
    out = grouped[[*values, "test_accuracy"]].agg(["mean", "std"])
    out.columns = [f"{col}_{stat}" for col, stat in out.columns]
    out.insert(0, "n_seeds", grouped["seed"].nunique())
    return out.reset_index()


def accuracy_label(table: pd.DataFrame) -> str:
    """'83.4%' or '83.4 ± 0.5%' over the seeds present in `table`."""
    runs = table.drop_duplicates(["run", "seed"])
    accs = runs["test_accuracy"].to_numpy() * 100
    text = f"{np.nanmean(accs):.1f} ± {np.nanstd(accs, ddof=1):.1f}%" if len(accs) > 1 else f"{accs[0]:.1f}%"
    if "diverged" in runs and runs["diverged"].astype(bool).any():
        text += f" — DIVERGED ({int(runs['diverged'].astype(bool).sum())} of {len(runs)} seeds)"
    return text
