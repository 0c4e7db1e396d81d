"""Figures a reviewer accepts: legends off the data, every line in a legend, border lines per pathway,
axes labelled, every probe point named on the depth axis; one plotter per registered figure kind.

Tables are built from real models' probe points (flowprobe.models.receptive.receptive_fields) with
synthetic values, so the layouts are those of the study's networks.
"""
import functools
import os
import re
import subprocess
import sys
from itertools import product

import matplotlib
import numpy as np
import pandas as pd
import pytest

from flowprobe.figures import KINDS, figure_kind
from flowprobe.models import build_model
from flowprobe.models.receptive import receptive_fields
from flowprobe.plots import DEPTH_LABEL, draw_figure, pathway_color, tick_label

NARROW = {"widths": [4, 4, 4, 4]}
VALUES = {"test_acc", "train_acc", "saturation", "mean_abs_grad", "cka"}


def point_table(run: str, spec: str, seeds=(0,), relabel=None, **options) -> pd.DataFrame:
    """A figure table for one run: the model's real probe points, values drawn per seed."""
    points = receptive_fields(build_model(spec, 10, 3, 32, **options))
    if relabel:
        points = relabel(points)
    frames = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        n = len(points)
        values = {name: rng.uniform(0.1, 0.9, n) for name in VALUES}
        values["mean_abs_grad"] = 10 ** rng.uniform(-4, -2, n)
        frames.append(points.assign(run=run, seed=seed, model=spec, test_accuracy=0.8, diverged=False, **values))
    return pd.concat(frames, ignore_index=True)


def resnet_with_branches(points: pd.DataFrame) -> pd.DataFrame:
    """ResNet points with the convs inside residual units labelled 'branch' (a new pathway label)."""
    inside = points["probe_point"].str.endswith(".conv")
    return points.assign(pathway=np.where(inside, "branch", points["pathway"]))


@functools.cache
def tables() -> dict[str, pd.DataFrame]:
    return {
        "fig7": pd.concat([point_table("a", "MPNet2(2:3x3, 2:7x7)", (0, 1), **NARROW),
                           point_table("b", "MPNet2(1:3x3, 4:7x7)", **NARROW)]),
        "small": point_table("s", "MPNet1(1:3x3, 2:5x5)", **NARROW),
        "vgg": point_table("v", "VGG16", widths=[4, 4, 4, 4, 4], fc_width=8),
        "resnet": point_table("r", "ResNet34", relabel=resnet_with_branches, **NARROW),
    }


def expand(label: str) -> set[str]:
    """Probe-point names of a tick label ('s0.b1.{min,max}.0', 'a / b' or a plain name)."""
    names = set()
    for part in label.split(" / "):
        pieces = [p[1:-1].split(",") if p.startswith("{") else [p] for p in part.split(".")]
        names |= {".".join(combo) for combo in product(*pieces)}
    return names


def overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("name, kind", [
    ("fig7", "pathway_probes"), ("fig7", "saturation_probes"), ("fig7", "gradients"), ("fig7", "cka_output"),
    ("vgg", "saturation_probes"), ("resnet", "pathway_probes"),
])
def test_depth_figures_name_every_point_and_keep_legends_off_the_data(name, kind):
    table = tables()[name]
    fig = figure_kind(kind).plotter()(table, "a title")
    fig.canvas.draw()
    axes = fig.get_axes()
    runs = list(dict.fromkeys(table["run"]))
    assert len(axes) == len(runs) * (2 if kind != "pathway_probes" else 1)
    for ax in axes:
        run = runs[ax.get_subplotspec().colspan.start]
        ticks = set().union(*(expand(t.get_text()) for t in ax.get_xticklabels()))
        assert ticks == set(table.loc[table["run"] == run, "probe_point"]), "every probe point is named"
        assert ax.get_xlabel() == DEPTH_LABEL and ax.get_ylabel()
    for col, run in enumerate(runs):
        top = [ax for ax in axes if ax.get_subplotspec().colspan.start == col and ax.get_subplotspec().rowspan.start == 0][0]
        legend = top.get_legend()
        box = legend.get_window_extent()
        assert not any(overlaps(box, ax.get_window_extent()) for ax in axes), "legend off every axes"
        drawn = {(matplotlib.colors.to_hex(line.get_color()), line.get_linestyle()) for line in top.get_lines()}
        listed = {(matplotlib.colors.to_hex(h.get_color()), h.get_linestyle()) for h in legend.legend_handles}
        assert drawn == listed, "every drawn line is in the legend, and nothing else"
        run_table = table[table["run"] == run]
        bordered = set(run_table.loc[run_table["border_layer"].astype(bool), "pathway"])
        dotted = [line for line in top.get_lines() if line.get_linestyle() == ":"]
        assert sorted(matplotlib.colors.to_hex(line.get_color()) for line in dotted) == sorted(
            pathway_color(p) for p in bordered), "one border line per pathway, in its colour"
        texts = [t.get_text() for t in legend.get_texts()]
        assert sum("border layer" in t for t in texts) == len(bordered)
        assert run_table["model"].iloc[0] in legend.get_title().get_text()
    matplotlib.pyplot.close(fig)


def test_pathways_of_any_label_get_their_own_line_and_colour():
    table = tables()["resnet"]
    fig = figure_kind("pathway_probes").plotter()(table, "t")
    texts = [t.get_text() for t in fig.get_axes()[0].get_legend().get_texts()]
    assert "branch" in texts and "trunk" in texts
    assert len({pathway_color(p) for p in ("trunk", "min", "max", "branch", "new", "p0", "p1")}) == 7
    matplotlib.pyplot.close(fig)


def test_pathway_colours_do_not_depend_on_the_process():
    code = "from flowprobe.plots import pathway_color; print(pathway_color('zebra'), pathway_color('p7'))"
    outs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2")
    }
    assert outs == {f"{pathway_color('zebra')} {pathway_color('p7')}\n"}


def test_tick_label_compresses_parallel_twins_and_expands_back():
    assert tick_label(["s3.b1.min.3", "s3.b1.max.3"]) == "s3.b1.{min,max}.3"
    assert tick_label(["stem"]) == "stem"
    assert expand(tick_label(["s0.b0.p0.1", "s0.b0.p1.1", "s0.b0.p2.1"])) == {"s0.b0.p0.1", "s0.b0.p1.1", "s0.b0.p2.1"}
    assert expand(tick_label(["fc1", "s0.b0.add"])) == {"fc1", "s0.b0.add"}


def test_parallel_pathways_meet_at_their_merge():
    from flowprobe.plots import pathway_lines

    lines = pathway_lines(tables()["fig7"].query("run == 'b'"))
    block = lines[lines["segment"] == lines.loc[lines["probe_point"] == "s1.b0.min.0", "segment"].iloc[0]]
    for line in ("min", "max"):
        members = block[block["line"] == line].sort_values("x")["probe_point"].tolist()
        assert members[0] == "s0.b1.add" and members[-1] == "s1.b0.add", "each pathway runs input → merge"


def heatmap_table() -> pd.DataFrame:
    names_a, names_b = [f"s3.b1.p0.{i}" for i in range(4)], [f"s3.b1.p1.{i}" for i in range(4)]
    rows = [{"layer_a": a, "layer_b": b, "cka": 0.5, "pathway_a": "p0", "pathway_b": "p1"} for a in names_a for b in names_b]
    return pd.DataFrame(rows).assign(run="h", seed=0, model="MPNet1(4:3x3, 4:3x3)", test_accuracy=0.7, diverged=False)


def ablation_table() -> pd.DataFrame:
    rows = [{"target": t, "pathway": p, "accuracy": 0.6, "accuracy_intact": 0.7, "delta": -0.1}
            for t in ("s0.b0", "s1.b0", "all") for p in ("min", "max", "branch")]
    rows.append({"target": "intact", "pathway": "none", "accuracy": 0.7, "accuracy_intact": 0.7, "delta": 0.0})
    return pd.DataFrame(rows).assign(run="x", seed=0, model="MPNet2(1:3x3, 2:7x7)", test_accuracy=0.7, diverged=False)


def test_heatmap_names_every_layer_and_its_axes():
    fig = figure_kind("cka_pathways").plotter()(heatmap_table(), "t")
    ax = fig.get_axes()[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"s3.b1.p1.{i}" for i in range(4)]
    assert [t.get_text() for t in ax.get_yticklabels()] == [f"s3.b1.p0.{i}" for i in range(4)]
    assert "p1" in ax.get_xlabel() and "p0" in ax.get_ylabel()
    matplotlib.pyplot.close(fig)


def test_ablation_legend_lists_each_removed_pathway_outside_the_panels():
    fig = figure_kind("ablation").plotter()(ablation_table(), "t")
    fig.canvas.draw()
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["$p_{l,\\min}$ removed", "$p_{l,\\max}$ removed", "branch removed"]
    assert not any(overlaps(legend.get_window_extent(), ax.get_window_extent()) for ax in fig.get_axes())
    ax = fig.get_axes()[0]
    assert ax.get_xlabel() and ax.get_ylabel() and "intact" not in [t.get_text() for t in ax.get_xticklabels()]
    matplotlib.pyplot.close(fig)


def sweep_table() -> pd.DataFrame:
    """VGG16 probe curves of one swept run at 32 and 64 px."""
    runs = [point_table(f"v_r{r}", "VGG16", widths=[4, 4, 4, 4, 4], fc_width=8).assign(resolution=r) for r in (32, 64)]
    return pd.concat(runs, ignore_index=True)


def cost_table() -> pd.DataFrame:
    """Cost rows of a full run and its pruned retrain."""
    return pd.DataFrame({
        "run": ["v", "v_pruned"], "seed": 0, "model": "VGG16", "test_accuracy": [0.8, 0.79], "diverged": False,
        "resolution": 32, "variant": ["full", "pruned"], "full_run": "v", "params": [2.0e5, 2.0e4],
        "flops": [1.0e7, 5.0e6], "train_acc": [0.9, 0.88], "seconds_per_epoch": [3.0, 1.5],
    })


@pytest.mark.parametrize("kind, table", [("resolution_sweep", sweep_table), ("prune", cost_table)])
def test_sweep_and_prune_figures_keep_title_legends_and_labels_apart(kind, table):
    """The suptitle, each panel (with its title, legend and tick labels) and the run labels of the
    prune figure do not overlap one another, and the run labels stay inside their axes."""
    fig = figure_kind(kind).plotter()(table(), "a long figure title that has to wrap over the panels of the figure")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [ax.get_tightbbox(renderer) for ax in fig.get_axes() if ax.axison]
    title = fig._suptitle.get_window_extent(renderer)
    assert not any(overlaps(title, box) for box in boxes), "title off every panel"
    assert not any(overlaps(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]), "panels apart"
    for ax in fig.get_axes():
        assert ax.get_xlabel() and ax.get_ylabel() if ax.axison else True
        if ax.get_legend() and ax.get_title():
            assert not overlaps(ax.get_legend().get_window_extent(renderer), ax.title.get_window_extent(renderer))
        labels = [t.get_window_extent(renderer) for t in ax.texts if t.get_text()]
        inside = ax.get_window_extent(renderer)
        assert all(inside.x0 <= b.x0 and b.x1 <= inside.x1 and inside.y0 <= b.y0 and b.y1 <= inside.y1 for b in labels)
        assert not any(overlaps(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]), "run labels apart"
    matplotlib.pyplot.close(fig)


def test_every_registered_kind_draws_pdf_and_png(tmp_path):
    per_kind = {"cka_pathways": heatmap_table(), "ablation": ablation_table(), "resolution_sweep": sweep_table(),
                "prune": cost_table()}
    for kind in KINDS:
        assert callable(KINDS[kind].table) and KINDS[kind].caption
        table = per_kind.get(kind, tables()["small"])
        pdf, png = tmp_path / f"{kind}.pdf", tmp_path / f"{kind}.png"
        draw_figure(kind, table, str(pdf), str(png), title=kind)
        assert pdf.read_bytes()[:5] == b"%PDF-" and png.read_bytes()[:4] == b"\x89PNG"


def test_unknown_kind_names_the_registered_ones(tmp_path):
    with pytest.raises(KeyError, match=re.escape(", ".join(KINDS))):
        draw_figure("violin", pd.DataFrame(), str(tmp_path / "a.pdf"), str(tmp_path / "a.png"))
