"""Aggregating per-run analysis CSVs into one long table per figure.

One row per run × seed × probe point (or per heatmap cell / ablation target), with the run's
model spec and final test accuracy, so a figure is drawn from its table alone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flowprobe.h5io import POINT_COLUMNS

# The per-run analysis files each kind of figure reads (besides train_log.csv).
FIGURE_INPUTS = {
    "layer_probes": ["probes.csv"],
    "pathway_probes": ["probes.csv"],
    "saturation_probes": ["probes.csv", "saturation.csv"],
    "gradients": ["probes.csv", "gradients.csv"],
    "cka_output": ["probes.csv", "cka_output.csv"],
    "cka_pathways": ["cka_pathways.csv"],
    "ablation": ["ablation.csv"],
    "resolution_sweep": ["probes.csv"],
    "prune": ["cost.csv"],
}


def final_test_accuracy(train_log: str) -> tuple[float, bool]:
    """(test accuracy after the last finished epoch, whether training diverged).

    A run recorded as diverged (`train.on_divergence: record`) ends with a NaN row flagged
    `diverged`; its accuracy is the last finished epoch's (NaN if none finished)."""
    log = pd.read_csv(train_log)
    diverged = bool(log["diverged"].fillna(0).astype(bool).any()) if "diverged" in log else False
    finished = log["test_acc"].dropna()
    return (float(finished.iloc[-1]) if len(finished) else float("nan")), diverged


def merge_point_tables(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Join analyses of one run on the probe-point metadata; the first table wins on clashes."""
    merged = frames[0]
    for frame in frames[1:]:
        keys = [c for c in POINT_COLUMNS if c in merged and c in frame]
        extra = [c for c in frame.columns if c not in merged.columns]
        merged = merged.merge(frame[keys + extra], on=keys, how="left", validate="one_to_one")
    return merged


def figure_table(kind: str, members: list[dict]) -> pd.DataFrame:
    """Long table of a figure from its members ({run, seed, model, files: {name: path}})."""
    rows = []
    for member in members:
        files = member["files"]
        frames = [pd.read_csv(files[name]) for name in FIGURE_INPUTS[kind]]
        table = merge_point_tables(frames) if "probe_point" in frames[0] else frames[0]
        accuracy, diverged = final_test_accuracy(files["train_log.csv"])
        label = {
            "run": member["run"],
            "seed": member["seed"],
            "model": member["model"],
            "test_accuracy": accuracy,
            "diverged": diverged,
            "resolution": member.get("resolution"),
        }
        for i, (col, value) in enumerate(label.items()):
            table.insert(i, col, value)
        rows.append(table)
    return pd.concat(rows, ignore_index=True)


POINT_KEYS = ["run", "model", "probe_point", "stage", "block", "pathway", "position"]
# (group keys, value columns) of the mean ± std summary of each kind of figure table.
SUMMARY = {
    "layer_probes": (POINT_KEYS, ["test_acc", "train_acc"]),
    "pathway_probes": (POINT_KEYS, ["test_acc", "train_acc"]),
    "saturation_probes": (POINT_KEYS, ["test_acc", "saturation"]),
    "gradients": (POINT_KEYS, ["test_acc", "mean_abs_grad"]),
    "cka_output": (POINT_KEYS, ["test_acc", "cka"]),
    "cka_pathways": (["run", "model", "layer_a", "layer_b"], ["cka"]),
    "ablation": (["run", "model", "target", "pathway"], ["accuracy", "delta"]),
    "resolution_sweep": ([*POINT_KEYS, "resolution"], ["test_acc", "train_acc"]),
    "prune": (["run", "model", "resolution", "variant", "full_run"], ["params", "flops", "train_acc", "seconds_per_epoch"]),
}


def summarise(kind: str, table: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of a figure table's values (std is NaN for a single seed)."""
    keys, values = SUMMARY[kind]
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
