"""Figures of the study, drawn from the long tables of `flowprobe.tables`.

Layout along the depth axis: trunk probe points take one unit each; a multi-path block
spans (longest pathway + 1) units and every pathway's layers are spread evenly over it,
so parallel pathways advance side by side and meet at their merge. One colour per
pathway label in every figure; the model's test accuracy is in each legend.
"""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from flowprobe.tables import accuracy_label  # noqa: E402

PATHWAY_COLORS = {"trunk": "#4d4d4d", "min": "#1f77b4", "max": "#ff7f0e"}
PATHWAY_NAMES = {"min": "$p_{l,\\min}$", "max": "$p_{l,\\max}$", "trunk": "trunk"}
METRIC_LABELS = {
    "test_acc": "probe test accuracy",
    "saturation": "saturation",
    "mean_abs_grad": "mean |gradient|",
    "cka": "CKA with output",
}


def pathway_color(label: str) -> str:
    if label in PATHWAY_COLORS:
        return PATHWAY_COLORS[label]
    palette = sns.color_palette("tab10", 10)
    index = int(label[1:]) if label[1:].isdigit() else hash(label)
    return matplotlib.colors.to_hex(palette[(index + 2) % 10])


def depth_layout(points: pd.DataFrame) -> np.ndarray:
    """x position of each probe point (rows in forward order, one run and seed)."""
    xs = np.zeros(len(points))
    cursor, i = 0.0, 0
    rows = points.reset_index(drop=True)
    while i < len(rows):
        if rows.loc[i, "pathway"] == "trunk":
            cursor += 1
            xs[i] = cursor
            i += 1
            continue
        j = i
        key = (rows.loc[i, "stage"], rows.loc[i, "block"])
        while j < len(rows) and rows.loc[j, "pathway"] != "trunk" and (rows.loc[j, "stage"], rows.loc[j, "block"]) == key:
            j += 1
        block = rows.iloc[i:j]
        width = block.groupby("pathway").size().max() + 1
        for _, members in block.groupby("pathway", sort=False):
            n = len(members)
            for k, idx in enumerate(members.index):
                xs[idx] = cursor + (k + 1) * width / (n + 1)
        cursor += width - 1
        i = j
    return xs


def pathway_lines(table: pd.DataFrame) -> pd.DataFrame:
    """Rows per drawn line: each pathway line holds its own points plus the trunk/merges."""
    frames = []
    for (_run, _seed), group in table.groupby(["run", "seed"], sort=False):
        group = group.assign(x=depth_layout(group))
        branches = [p for p in group["pathway"].unique() if p != "trunk"]
        for branch in branches or ["trunk"]:
            keep = group["pathway"].isin(["trunk", branch])
            frames.append(group[keep].assign(line=branch))
    return pd.concat(frames, ignore_index=True)


def _depth_ticks(ax, lines: pd.DataFrame) -> None:
    """Label trunk points (stem, merges, plain layers) without overlap."""
    trunk = lines[lines["pathway"] == "trunk"].drop_duplicates("x").sort_values("x")
    if trunk.empty:
        trunk = lines.drop_duplicates("x").sort_values("x")
    step = max(1, int(np.ceil(len(trunk) / 24)))
    ax.set_xticks(trunk["x"].to_numpy()[::step])
    ax.set_xticklabels(trunk["probe_point"].to_numpy()[::step], rotation=90, fontsize=7)


def _mark_border(ax, lines: pd.DataFrame) -> None:
    border = lines[lines["border_layer"].astype(bool)].drop_duplicates(["line", "x"])
    labelled = set()
    for _, row in border.iterrows():
        line = row["line"]
        label = None if line in labelled else f"border layer {PATHWAY_NAMES.get(line, line)}"
        labelled.add(line)
        ax.axvline(row["x"], color=pathway_color(line), ls=":", lw=1.2, alpha=0.8, label=label)


def _metric_panel(ax, run_table: pd.DataFrame, metric: str, log_y: bool = False) -> None:
    lines = pathway_lines(run_table)
    for line, data in lines.groupby("line", sort=False):
        stats = data.groupby("x")[metric].agg(["mean", "std"]).reset_index()
        color = pathway_color(line)
        ax.plot(stats["x"], stats["mean"], marker="o", ms=3, color=color, label=PATHWAY_NAMES.get(line, line))
        if stats["std"].notna().any():
            ax.fill_between(stats["x"], stats["mean"] - stats["std"], stats["mean"] + stats["std"], color=color, alpha=0.2)
    _mark_border(ax, lines)
    _depth_ticks(ax, lines)
    if log_y:
        ax.set_yscale("log")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.grid(alpha=0.3)


def _legend(ax, run_table: pd.DataFrame) -> None:
    model = run_table["model"].iloc[0]
    ax.legend(title=f"{model}\ntest acc {accuracy_label(run_table)}", fontsize=8, title_fontsize=8, loc="best")


def _per_run_grid(table: pd.DataFrame, metrics: list[str], title: str, log_y: tuple = ()):
    runs = list(dict.fromkeys(table["run"]))
    fig, axes = plt.subplots(
        len(metrics), len(runs), figsize=(5.5 * len(runs), 3.6 * len(metrics)), squeeze=False, sharey="row"
    )
    for col, run in enumerate(runs):
        run_table = table[table["run"] == run]
        for row, metric in enumerate(metrics):
            ax = axes[row, col]
            _metric_panel(ax, run_table, metric, log_y=metric in log_y)
            if row == 0:
                _legend(ax, run_table)
    _suptitle(fig, title, len(runs))
    return fig


def _heatmaps(table: pd.DataFrame, title: str):
    runs = list(dict.fromkeys(table["run"]))
    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 5), squeeze=False)
    for ax, run in zip(axes[0], runs):
        run_table = table[table["run"] == run]
        grid = run_table.pivot_table(index="layer_a", columns="layer_b", values="cka", aggfunc="mean", sort=False)
        sns.heatmap(grid, ax=ax, vmin=0, vmax=1, cmap="viridis", square=True, cbar_kws={"label": "CKA"})
        ax.set_xlabel(f"layer of pathway {run_table['pathway_b'].iloc[0]}")
        ax.set_ylabel(f"layer of pathway {run_table['pathway_a'].iloc[0]}")
        ax.set_title(f"{run_table['model'].iloc[0]} (test acc {accuracy_label(run_table)})", fontsize=9)
    _suptitle(fig, title, len(runs))
    return fig


def _ablation_bars(table: pd.DataFrame, title: str):
    """One panel per run: accuracy change (points) when a pathway is removed, per block and 'all'."""
    table = table[table["target"] != "intact"].assign(delta_points=lambda t: 100 * t["delta"])
    runs = list(dict.fromkeys(table["run"]))
    fig, axes = plt.subplots(1, len(runs), figsize=(4.5 * len(runs), 3.8), squeeze=False, sharey=True)
    for ax, run in zip(axes[0], runs):
        run_table = table[table["run"] == run]
        palette = {p: pathway_color(p) for p in run_table["pathway"].unique()}
        sns.barplot(run_table, x="target", y="delta_points", hue="pathway", palette=palette, ax=ax, errorbar="sd")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xlabel("block whose pathway is removed")
        ax.set_ylabel("test accuracy change (points)")
        ax.tick_params(axis="x", rotation=90, labelsize=7)
        ax.set_title(f"{run_table['model'].iloc[0]} (test acc {accuracy_label(run_table)})", fontsize=9)
        handles, labels = ax.get_legend_handles_labels()
        ax.get_legend().remove()
    fig.legend(handles, [PATHWAY_NAMES.get(label, label) + " removed" for label in labels],
               loc="upper right", ncol=len(labels), fontsize=8)
    _suptitle(fig, title, len(runs) - 1 or 1, x=0.3)
    return fig


def _suptitle(fig, title: str, panels: int, **kw) -> None:
    """Figure title wrapped to the figure's width (~55 characters per panel column)."""
    fig.suptitle(textwrap.fill(title, width=55 * max(1, panels)), **kw)


def draw_figure(kind: str, table: pd.DataFrame, pdf: str, png: str, *, title: str = "") -> None:
    """Draw figure `kind` from its table to a vector PDF and a 200-dpi PNG."""
    sns.set_theme(style="whitegrid", context="paper")
    if kind in ("layer_probes", "pathway_probes"):
        fig = _per_run_grid(table, ["test_acc"], title)
    elif kind == "saturation_probes":
        fig = _per_run_grid(table, ["test_acc", "saturation"], title)
    elif kind == "gradients":
        fig = _per_run_grid(table, ["test_acc", "mean_abs_grad"], title, log_y=("mean_abs_grad",))
    elif kind == "cka_output":
        fig = _per_run_grid(table, ["test_acc", "cka"], title)
    elif kind == "cka_pathways":
        fig = _heatmaps(table, title)
    elif kind == "ablation":
        fig = _ablation_bars(table, title)
    elif kind in ("resolution_sweep", "prune"):
        from flowprobe import sweep_plots  # it draws with this module's panels

        fig = getattr(sweep_plots, f"{kind}_figure")(table, title)
    else:
        raise ValueError(f"unknown figure kind {kind!r}")
    fig.tight_layout()
    fig.savefig(pdf)
    fig.savefig(png, dpi=200)
    plt.close(fig)
