"""The figure kinds of the study, declared once.

A figure kind says which per-run analysis files a figure reads (besides train_log.csv), how
one run's files become its rows of the figure table, which columns the seed summary groups by
and averages, which function of `flowprobe.plots` draws it, and the report caption. The
config schema's `kind` enum (injected by `flowprobe.config.load_config`), the workflow's
table inputs, `flowprobe.tables`, `flowprobe.plots` and the report all read `KINDS`.

Adding a kind: one `FigureKind` entry below, its table builder (a function of
`flowprobe.tables` taking one run's frames) and its plotter (a function of `flowprobe.plots`
taking the table and a title, returning a matplotlib figure).

Importing this module is cheap (no torch, no matplotlib): the Snakefile reads it at parse time.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import pandas as pd

from flowprobe import tables

POINT_KEYS = ("run", "model", "probe_point", "stage", "block", "pathway", "position")

PROBE_LINES = (
    "Lines follow the network's pathways in depth order: the trunk (stem, merges) and one line per "
    "pathway in the pathway's colour; parallel pathway layers are spread over their block so they "
    "meet at the merge, and every probe point is named on the depth axis. Dotted vertical lines, one "
    "per pathway in its colour, mark the pathway's predicted border layer (the first layer whose "
    "input receptive field covers the image): layers past it cannot integrate new context."
)


@dataclass(frozen=True)
class FigureKind:
    """One kind of figure: what it reads, how its table and summary are built, who draws it.

    Attributes:
        name: the config's `figures.<name>.kind` value.
        inputs: per-run analysis files read besides train_log.csv (the first one decides the rows).
        table: builds one run's rows from the frames of `inputs` (a `flowprobe.tables` function).
        summary_keys: columns the mean ± std over seeds is grouped by.
        summary_values: columns averaged over seeds (test accuracy of the run is always added).
        plot: the function drawing the figure from its table: a name in `flowprobe.plots`, or
            "module:function" for a plotter elsewhere (e.g. `flowprobe.sweep_plots`).
        caption: what the figure shows, for the report.
    """

    name: str
    inputs: tuple[str, ...]
    table: Callable[[list[pd.DataFrame]], pd.DataFrame]
    summary_keys: tuple[str, ...]
    summary_values: tuple[str, ...]
    plot: str
    caption: str

    def plotter(self) -> Callable:
        """The plotting function (imports matplotlib, so only when drawing)."""
        module, _, name = self.plot.rpartition(":")
        return getattr(importlib.import_module(module or "flowprobe.plots"), name)


KINDS: dict[str, FigureKind] = {
    kind.name: kind
    for kind in (
        FigureKind(
            "layer_probes", ("probes.csv",), tables.merge_point_tables, POINT_KEYS, ("test_acc", "train_acc"),
            "probe_lines",
            "Linear-probe test accuracy per probe point (the study's Figs. 1-2). " + PROBE_LINES,
        ),
        FigureKind(
            "pathway_probes", ("probes.csv",), tables.merge_point_tables, POINT_KEYS, ("test_acc", "train_acc"),
            "probe_lines",
            "Linear-probe test accuracy per probe point and pathway (the study's Figs. 5, 7): probe accuracy "
            "that stalls or drops along a pathway means that pathway does little of the work. " + PROBE_LINES,
        ),
        FigureKind(
            "saturation_probes", ("probes.csv", "saturation.csv"), tables.merge_point_tables, POINT_KEYS,
            ("test_acc", "saturation"), "probes_and_saturation",
            "Probe accuracy (top) and PCA saturation (bottom) per probe point (the study's Fig. 3): tail "
            "layers have low saturation and add no probe accuracy. " + PROBE_LINES,
        ),
        FigureKind(
            "gradients", ("probes.csv", "gradients.csv"), tables.merge_point_tables, POINT_KEYS,
            ("test_acc", "mean_abs_grad"), "probes_and_gradients",
            "Probe accuracy (top) and mean |gradient| of the loss (bottom, log scale) per probe point "
            "(the study's Fig. 6). " + PROBE_LINES,
        ),
        FigureKind(
            "cka_output", ("probes.csv", "cka_output.csv"), tables.merge_point_tables, POINT_KEYS,
            ("test_acc", "cka"), "probes_and_cka",
            "Probe accuracy (top) and linear CKA with the network's output (bottom) per probe point "
            "(the study's Fig. 8). " + PROBE_LINES,
        ),
        FigureKind(
            "cka_pathways", ("cka_pathways.csv",), tables.first_table, ("run", "model", "layer_a", "layer_b"),
            ("cka",), "cka_heatmaps",
            "Minibatch linear CKA between every layer of one pathway and every layer of another in the same "
            "block (the study's Fig. 9), one heatmap per network.",
        ),
        FigureKind(
            "ablation", ("ablation.csv",), tables.first_table, ("run", "model", "target", "pathway"),
            ("accuracy", "delta"), "ablation_bars",
            "Change of test accuracy (points) when one pathway is zeroed before its merge, per block and "
            "in every block at once ('all'); one colour per removed pathway.",
        ),
        FigureKind(
            "resolution_sweep", ("probes.csv",), tables.merge_point_tables, (*POINT_KEYS, "resolution"),
            ("test_acc", "train_acc"), "flowprobe.sweep_plots:resolution_sweep_figure",
            "One run trained at several input resolutions: the probe curve per resolution with its "
            "predicted border layer (dotted), and the predicted border layer against the last productive "
            "layer observed in the probes, per resolution (docs/sweep_prune.md).",
        ),
        FigureKind(
            "prune", ("cost.csv",), tables.first_table,
            ("run", "model", "resolution", "variant", "full_run"),
            ("params", "flops", "train_acc", "seconds_per_epoch"), "flowprobe.sweep_plots:prune_figure",
            "Test accuracy against forward FLOPs per image for each full model and its pruned retrain "
            "(the layers the border-layer and depth rules predict unproductive removed), one marker per "
            "run, an arrow from full to pruned.",
        ),
    )
}


def figure_kind(name: str) -> FigureKind:
    """The registered kind `name`; KeyError naming the registered kinds otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown figure kind {name!r}; registered kinds: {', '.join(KINDS)}") from None
