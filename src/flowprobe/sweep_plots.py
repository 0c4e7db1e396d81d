"""Figures of resolution sweeps and pruned retrains (kinds `resolution_sweep` and `prune`).

resolution_sweep: per swept run one row of panels, the probe curve at each resolution with its
border layers (dotted), and a summary panel: predicted border layer vs observed last productive
layer across resolutions (Richter et al. 2021a: the tail moves with the input size).
prune: test accuracy vs forward FLOPs per image, one marker per run (mean ± std over seeds),
full and pruned models of one run joined by an arrow.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from flowprobe.plots import _legend, _metric_panel, _suptitle
from flowprobe.sweep import base_run_name, sweep_borders
from flowprobe.tables import accuracy_label

VARIANT_STYLE = {"full": ("#4d4d4d", "o"), "pruned": ("#2ca02c", "s")}


def _border_panel(ax, borders: pd.DataFrame, names: list[str]) -> None:
    """Predicted border layer and observed last productive layer (probe-point index) per resolution."""
    n = len(names)
    predicted = borders["border_index"].astype(float).fillna(n)  # no tail: beyond the last layer
    ax.plot(borders["resolution"], predicted, marker="v", color="#d62728", label="predicted border layer")
    ax.plot(borders["resolution"], borders["last_productive_index"].astype(float), marker="o", color="#1f77b4",
            label="observed last productive layer")
    ax.set_xscale("log", base=2)
    ax.set_xticks(borders["resolution"].tolist(), [str(r) for r in borders["resolution"]])
    step = max(1, int(np.ceil(n / 20)))
    ax.set_yticks(list(range(0, n, step)) + [n], [*names[::step], "none (no tail)"], fontsize=7)
    ax.set_xlabel("input resolution (px)")
    ax.set_ylabel("probe point")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def resolution_sweep_figure(table: pd.DataFrame, title: str):
    """One row per swept run: probe accuracy at every resolution, then the border summary panel."""
    table = table.assign(base=[base_run_name(r, s) for r, s in zip(table["run"], table["resolution"])])
    bases = list(dict.fromkeys(table["base"]))
    width = max(table.groupby("base")["resolution"].nunique()) + 1
    # constrained layout keeps each panel's legend (above it), title and axis labels off the others
    fig, axes = plt.subplots(len(bases), width, figsize=(4.6 * width, 4.4 * len(bases) + 0.8), squeeze=False,
                             layout="constrained")
    for row, base in enumerate(bases):
        group = table[table["base"] == base]
        runs = group.drop_duplicates("run").sort_values("resolution")["run"].tolist()
        for col, run in enumerate(runs):
            run_table = group[group["run"] == run]
            ax = axes[row, col]
            _metric_panel(ax, run_table, "test_acc")
            _legend(ax, run_table)  # above the panel, so the resolution goes into its title
            legend = ax.get_legend()
            legend.set_title(f"{base} at {int(run_table['resolution'].iloc[0])} px: {legend.get_title().get_text()}")
            ax.set_xlabel("probe point (forward order)")
        for ax in axes[row, len(runs):-1]:
            ax.axis("off")
        first = group[group["run"] == runs[0]]
        names = first.drop_duplicates("probe_point")["probe_point"].tolist()
        _border_panel(axes[row, -1], sweep_borders(group), names)
        axes[row, -1].set_title(f"{base}: tail vs resolution", fontsize=9)
    _suptitle(fig, title, 4.6 * width)
    return fig


def _count(n: float) -> str:
    """1234 -> '1.2k', 14858570 -> '14.86M'."""
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


def prune_figure(table: pd.DataFrame, title: str):
    """Test accuracy vs FLOPs: one marker per run (error bars: std over seeds), full → pruned arrows."""
    runs = table.groupby(["run", "variant", "full_run"], sort=False).agg(
        flops=("flops", "first"), params=("params", "first"),
        acc=("test_accuracy", "mean"), acc_std=("test_accuracy", "std"),
    ).reset_index()
    fig, ax = plt.subplots(figsize=(6.5, 4.5), layout="constrained")
    for variant, (color, marker) in VARIANT_STYLE.items():
        part = runs[runs["variant"] == variant]
        ax.errorbar(part["flops"], 100 * part["acc"], yerr=100 * part["acc_std"].fillna(0), fmt=marker,
                    color=color, ms=7, capsize=3, label=f"{variant} model", ls="none")
    for _, row in runs.iterrows():  # full models labelled above their marker, pruned ones below
        ax.annotate(f"{row['run']}\n{_count(row['params'])} params", (row["flops"], 100 * row["acc"]),
                    fontsize=6, xytext=(0, 8 if row["variant"] == "full" else -8), textcoords="offset points",
                    ha="center", va="bottom" if row["variant"] == "full" else "top")
    ax.margins(x=0.25, y=0.2)  # room for the labels inside the axes
    for _full_run, pair in runs.groupby("full_run", sort=False):
        full, pruned = pair[pair["variant"] == "full"], pair[pair["variant"] == "pruned"]
        if len(full) and len(pruned):
            ax.annotate("", xy=(pruned["flops"].iloc[0], 100 * pruned["acc"].iloc[0]),
                        xytext=(full["flops"].iloc[0], 100 * full["acc"].iloc[0]),
                        arrowprops=dict(arrowstyle="->", color="#999999", lw=1))
    ax.set_xscale("log")
    ax.set_xlabel("forward FLOPs per image (at the run's resolution)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title=f"test acc over runs: {accuracy_label(table)}", title_fontsize=7)
    _suptitle(fig, title, 6.5)
    return fig
