"""Figures of the study, drawn from the long tables of `flowprobe.tables`.

Layout along the depth axis: trunk probe points take one unit each; a multi-path block
spans (longest pathway + 1) units and every pathway's layers are spread evenly over it,
so parallel pathways advance side by side and meet at their merge. One colour per
pathway label in every figure (any label: unknown ones get a stable colour of their own);
the model's test accuracy is in each legend. Legends sit outside the axes, every drawn
line is in a legend, and every probe point is named on the depth axis.

Which function draws which kind of figure is declared in `flowprobe.figures.KINDS`.
"""

from __future__ import annotations

import textwrap
import zlib

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from flowprobe.figures import figure_kind  # noqa: E402
from flowprobe.tables import accuracy_label  # noqa: E402

PATHWAY_COLORS = {"trunk": "#4d4d4d", "min": "#1f77b4", "max": "#ff7f0e", "branch": "#2ca02c", "new": "#9467bd"}
PATHWAY_NAMES = {"min": "$p_{l,\\min}$", "max": "$p_{l,\\max}$", "trunk": "trunk"}
METRIC_LABELS = {
    "test_acc": "probe test accuracy",
    "saturation": "saturation",
    "mean_abs_grad": "mean |gradient|",
    "cka": "CKA with output",
}
DEPTH_LABEL = "probe point (forward order; parallel pathways side by side)"
INCH_PER_TICK = 0.14  # room per probe-point tick so that every name stays readable


def pathway_color(label: str) -> str:
    """The colour of pathway `label`: fixed for the known labels, else a stable tab10 pick."""
    if label in PATHWAY_COLORS:
        return PATHWAY_COLORS[label]
    palette = sns.color_palette("tab10", 10)
    # crc32, not hash(): str hashes change from process to process, colours must not.
    index = int(label[1:]) if label[1:].isdigit() else zlib.crc32(label.encode())
    return matplotlib.colors.to_hex(palette[(index + 5) % 10])


def pathway_name(label: str) -> str:
    return PATHWAY_NAMES.get(label, label)


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
        j = _block_end(rows, i)
        block = rows.iloc[i:j]
        width = block.groupby("pathway").size().max() + 1
        for _, members in block.groupby("pathway", sort=False):
            n = len(members)
            for k, idx in enumerate(members.index):
                xs[idx] = cursor + (k + 1) * width / (n + 1)
        cursor += width - 1
        i = j
    return xs


def _block_end(rows: pd.DataFrame, i: int) -> int:
    """End (exclusive) of the run of non-trunk rows of one block starting at row i."""
    key = (rows.loc[i, "stage"], rows.loc[i, "block"])
    j = i
    while j < len(rows) and rows.loc[j, "pathway"] != "trunk" and (rows.loc[j, "stage"], rows.loc[j, "block"]) == key:
        j += 1
    return j


def _segments(points: pd.DataFrame) -> list[pd.DataFrame]:
    """Drawn pieces of one run × seed: runs of consecutive trunk points (line 'trunk'), and
    each pathway's points inside a block joined to the trunk points before and after it."""
    pieces, is_trunk, i = [], points["pathway"].eq("trunk").to_numpy(), 0
    while i < len(points):
        if is_trunk[i]:
            j = i
            while j < len(points) and is_trunk[j]:
                j += 1
            pieces.append(points.iloc[i:j].assign(line="trunk", segment=i))
        else:
            j = _block_end(points, i)
            ends = [k for k in (i - 1, j) if 0 <= k < len(points) and is_trunk[k]]
            for pathway, members in points.iloc[i:j].groupby("pathway", sort=False):
                rows = sorted([*members.index, *ends])
                pieces.append(points.loc[rows].assign(line=pathway, segment=i))
        i = j
    return pieces


def pathway_lines(table: pd.DataFrame) -> pd.DataFrame:
    """Rows per drawn piece (columns `line`, `segment`, `x` added), over every run × seed."""
    frames = []
    for _, group in table.groupby(["run", "seed"], sort=False):
        group = group.reset_index(drop=True)
        frames.extend(_segments(group.assign(x=depth_layout(group))))
    return pd.concat(frames, ignore_index=True)


def tick_label(names: list[str]) -> str:
    """One tick label for the probe points drawn at one x: 's3.b1.{min,max}.3' for parallel twins."""
    names = list(dict.fromkeys(names))
    parts = [n.split(".") for n in names]
    if len(names) == 1 or len({len(p) for p in parts}) != 1:
        return " / ".join(names)
    columns = list(zip(*parts))
    return ".".join(c[0] if len(set(c)) == 1 else "{" + ",".join(dict.fromkeys(c)) + "}" for c in columns)


def _depth_ticks(ax, run_table: pd.DataFrame) -> None:
    """A tick at every probe point, named (and coloured by pathway when it is alone at its x)."""
    first = run_table.drop_duplicates("seed").iloc[0]["seed"]
    points = run_table[run_table["seed"] == first].reset_index(drop=True)
    points = points.assign(x=depth_layout(points))
    ticks = points.groupby("x", sort=True).agg(names=("probe_point", list), pathways=("pathway", set))
    ax.set_xticks(ticks.index.to_numpy())
    ax.set_xticklabels([tick_label(n) for n in ticks["names"]], rotation=90, fontsize=6)
    for label, pathways in zip(ax.get_xticklabels(), ticks["pathways"]):
        if len(pathways) == 1:
            label.set_color(pathway_color(next(iter(pathways))))
    ax.set_xlabel(DEPTH_LABEL)


def _mark_border(ax, lines: pd.DataFrame) -> None:
    """One dotted line per pathway at its border layer, in the pathway's colour, in the legend."""
    border = lines[lines["border_layer"].astype(bool)]
    for pathway, rows in border.groupby("pathway", sort=False):
        ax.axvline(rows["x"].min(), color=pathway_color(pathway), ls=":", lw=1.4, alpha=0.9,
                   label=f"border layer, {pathway_name(pathway)}")


def _metric_panel(ax, run_table: pd.DataFrame, metric: str, log_y: bool = False) -> None:
    lines = pathway_lines(run_table)
    labelled = set()
    for (line, _), piece in lines.groupby(["line", "segment"], sort=False):
        stats = piece.groupby("x")[metric].agg(["mean", "std"]).reset_index()
        color = pathway_color(line)
        label = None if line in labelled else pathway_name(line)
        labelled.add(line)
        # The trunk on top: its merge points end the pathway lines and must stay visible.
        ax.plot(stats["x"], stats["mean"], marker="o", ms=3, color=color, label=label, zorder=3 if line == "trunk" else 2)
        if stats["std"].notna().any():
            ax.fill_between(stats["x"], stats["mean"] - stats["std"], stats["mean"] + stats["std"], color=color, alpha=0.2)
    _mark_border(ax, lines)
    _depth_ticks(ax, run_table)
    if log_y:
        ax.set_yscale("log")
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    ax.grid(alpha=0.3)


def _legend(ax, run_table: pd.DataFrame) -> None:
    """The panel's legend above its axes (never over the data), titled by model and accuracy."""
    handles, labels = ax.get_legend_handles_labels()
    model = run_table["model"].iloc[0]
    ax.legend(handles, labels, title=f"{model}\ntest acc {accuracy_label(run_table)}", fontsize=7, title_fontsize=8,
              loc="lower center", bbox_to_anchor=(0.5, 1.02), ncol=min(len(labels), 3), frameon=False)


def _panel_width(run_table: pd.DataFrame) -> float:
    """Inches for a panel whose closest two ticks are INCH_PER_TICK apart."""
    first = run_table[run_table["seed"] == run_table["seed"].iloc[0]]
    xs = np.unique(depth_layout(first))
    slots = (xs[-1] - xs[0]) / np.diff(xs).min() + 1 if len(xs) > 1 else 1
    return max(5.5, INCH_PER_TICK * slots + 1.5)


def _per_run_grid(table: pd.DataFrame, metrics: list[str], title: str, log_y: tuple = ()):
    """One column per run, one row per metric, depth along x."""
    runs = list(dict.fromkeys(table["run"]))
    widths = [_panel_width(table[table["run"] == run]) for run in runs]
    fig, axes = plt.subplots(
        len(metrics), len(runs), figsize=(sum(widths), 3.2 * len(metrics) + 2.2), squeeze=False,
        sharey="row", width_ratios=widths, layout="constrained",
    )
    for col, run in enumerate(runs):
        run_table = table[table["run"] == run]
        for row, metric in enumerate(metrics):
            _metric_panel(axes[row, col], run_table, metric, log_y=metric in log_y)
        _legend(axes[0, col], run_table)
    _suptitle(fig, title, sum(widths))
    return fig


def probe_lines(table: pd.DataFrame, title: str):
    """Probe test accuracy per probe point and pathway (kinds layer_probes, pathway_probes)."""
    return _per_run_grid(table, ["test_acc"], title)


def probes_and_saturation(table: pd.DataFrame, title: str):
    """Probe accuracy above PCA saturation (kind saturation_probes)."""
    return _per_run_grid(table, ["test_acc", "saturation"], title)


def probes_and_gradients(table: pd.DataFrame, title: str):
    """Probe accuracy above mean |gradient| on a log scale (kind gradients)."""
    return _per_run_grid(table, ["test_acc", "mean_abs_grad"], title, log_y=("mean_abs_grad",))


def probes_and_cka(table: pd.DataFrame, title: str):
    """Probe accuracy above linear CKA with the output (kind cka_output)."""
    return _per_run_grid(table, ["test_acc", "cka"], title)


def cka_heatmaps(table: pd.DataFrame, title: str):
    """One layer × layer CKA heatmap per run, every layer named (kind cka_pathways)."""
    runs = list(dict.fromkeys(table["run"]))
    fig, axes = plt.subplots(1, len(runs), figsize=(5.5 * len(runs), 5.5), squeeze=False, layout="constrained")
    for ax, run in zip(axes[0], runs):
        run_table = table[table["run"] == run]
        grid = run_table.pivot_table(index="layer_a", columns="layer_b", values="cka", aggfunc="mean", sort=False)
        sns.heatmap(grid, ax=ax, vmin=0, vmax=1, cmap="viridis", square=True, xticklabels=True, yticklabels=True,
                    cbar_kws={"label": "linear CKA"})
        ax.tick_params(labelsize=6)
        ax.set_xlabel(f"layer of pathway {pathway_name(run_table['pathway_b'].iloc[0])}")
        ax.set_ylabel(f"layer of pathway {pathway_name(run_table['pathway_a'].iloc[0])}")
        ax.set_title(f"{run_table['model'].iloc[0]} (test acc {accuracy_label(run_table)})", fontsize=9)
    _suptitle(fig, title, 5.5 * len(runs))
    return fig


def ablation_bars(table: pd.DataFrame, title: str):
    """One panel per run: accuracy change (points) when a pathway is removed, per block and 'all'."""
    table = table[table["target"] != "intact"].assign(delta_points=lambda t: 100 * t["delta"])
    runs = list(dict.fromkeys(table["run"]))
    fig, axes = plt.subplots(1, len(runs), figsize=(4.5 * len(runs), 4.2), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, run in zip(axes[0], runs):
        run_table = table[table["run"] == run]
        palette = {p: pathway_color(p) for p in run_table["pathway"].unique()}
        sns.barplot(run_table, x="target", y="delta_points", hue="pathway", palette=palette, ax=ax, errorbar="sd")
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xlabel("block whose pathway is removed")
        ax.set_ylabel("test accuracy change (points)")
        ax.tick_params(axis="x", rotation=90, labelsize=7)
        ax.set_title(f"{run_table['model'].iloc[0]} (test acc {accuracy_label(run_table)})", fontsize=9)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    handles = {p: matplotlib.patches.Patch(color=pathway_color(p)) for p in dict.fromkeys(table["pathway"])}
    fig.legend(handles.values(), [pathway_name(p) + " removed" for p in handles], loc="outside lower center",
               ncol=len(handles), fontsize=8, frameon=False)
    _suptitle(fig, title, 4.5 * len(runs))
    return fig


def _suptitle(fig, title: str, width_in: float) -> None:
    """Figure title wrapped to the figure's width (~10 characters per inch)."""
    fig.suptitle(textwrap.fill(title, width=max(40, int(10 * width_in))))


def draw_figure(kind: str, table: pd.DataFrame, pdf: str, png: str, *, title: str = "") -> None:
    """Draw a figure from its table to a vector PDF and a 200-dpi PNG.

    Args:
        kind: a registered figure kind (`flowprobe.figures.KINDS`); it names the plotter.
        table: the figure table (`flowprobe.tables.figure_table`).
        pdf: path of the PDF to write.
        png: path of the PNG to write.
        title: the figure's title.
    """
    sns.set_theme(style="whitegrid", context="paper")
    fig = figure_kind(kind).plotter()(table, title)
    fig.savefig(pdf)
    fig.savefig(png, dpi=200)
    plt.close(fig)
