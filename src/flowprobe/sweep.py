"""Derived runs: resolution sweeps and pruned retrains become ordinary runs of the DAG.

A run with `resolutions: [32, 64, 128]` is expanded, at config-load time, into one run per
resolution named `{run}_r{R}` carrying `sweep: {base, resolution}`; every stage then caches
per resolution because each resolution is its own run. A run with `prune: {from: predicted}`
gets a sibling `{run}_pruned` (same data, schedule and seeds; the pruned model of
`flowprobe.prune.pruned_architecture`) carrying `pruned: {run, from, removed}`. With
`prune: {from: observed}` the sibling always exists, carries `pruned: {run, from: observed}` and,
as its `model` and `model_options`, the full run's (an upper bound: what it trains is decided by
the workflow's `pruned_spec` rule from the full run's probes, and read from its model.pt
downstream; see `is_observed_prune`). Figures that name a swept run mean all its resolutions;
a `prune` figure naming a run also draws its pruned sibling.

`sweep_borders` reduces a resolution-sweep table to one row per resolution: the predicted
border layer next to the observed last productive layer.
"""

from __future__ import annotations

import copy

import pandas as pd

from flowprobe.config import DEFAULTS
from flowprobe.errors import ConfigError, FlowprobeError

PRUNED_SUFFIX = "_pruned"


def resolution_run_name(base: str, resolution: int) -> str:
    """Name of the run of `base` at `resolution` (fits the run wildcard [A-Za-z0-9_.-]+)."""
    return f"{base}_r{resolution}"


def _add_run(runs: dict, name: str, run: dict, origin: str) -> None:
    if name in runs:
        raise ConfigError(f"config: run {name!r} derived from {origin} clashes with a run of that name; rename one")
    runs[name] = run


def expand_resolutions(runs: dict, figures: dict) -> tuple[dict, dict]:
    """Replace every run with `resolutions` by one run per resolution; figures follow.

    Args:
        runs: the config's runs with defaults filled in.
        figures: the config's figures.

    Returns:
        (runs, figures) with swept runs expanded in place of their base name.
    """
    out, derived = {}, {}
    for name, run in runs.items():
        if not run.get("resolutions"):
            _add_run(out, name, {k: v for k, v in run.items() if k != "resolutions"}, name)
            continue
        if len(set(run["resolutions"])) != len(run["resolutions"]):
            raise ConfigError(f"config: runs.{name}.resolutions = {run['resolutions']} repeats a resolution")
        derived[name] = []
        for resolution in run["resolutions"]:
            child = {k: copy.deepcopy(v) for k, v in run.items() if k != "resolutions"}
            child.update(resolution=resolution, sweep={"base": name, "resolution": resolution})
            derived[name].append(resolution_run_name(name, resolution))
            _add_run(out, derived[name][-1], child, f"runs.{name}.resolutions")
    return out, _rename_figure_runs(figures, derived)


def _rename_figure_runs(figures: dict, derived: dict[str, list[str]]) -> dict:
    figures = copy.deepcopy(figures)
    for fig in figures.values():
        fig["runs"] = [child for run in fig["runs"] for child in derived.get(run, [run])]
    return figures


def in_channels(run: dict) -> int:
    """Input channels of a (loaded) run: `channels`, else 1 for MNIST and 3 otherwise."""
    return run["channels"] or (1 if run["dataset"] == "mnist" else 3)


def is_observed_prune(run: dict) -> bool:
    """Whether a (loaded) run is the sibling of a `prune: {from: observed}` run: its architecture
    is known only from its pruned_spec.json and its trained model.pt, not from the config."""
    return (run.get("pruned") or {}).get("from") == "observed"


def expand_pruned(runs: dict, figures: dict) -> tuple[dict, dict]:
    """Add `{run}_pruned` for every run with `prune`.

    `from: predicted`: the pruned model is known now (nothing is added if nothing is pruned).
    `from: observed`: always added; its model is decided after the full run's probes (the
    `pruned_spec` rule), so the config keeps the full model as an upper bound.
    Either way the sibling drops the full run's `checkpoint:`: it is trained, not imported (the
    full model's weights do not fit the pruned architecture).

    Raises:
        ConfigError: a model that cannot be pruned (either kind, at parse time).
    """
    from flowprobe.prune import check_prunable, pruned_architecture

    out, derived = dict(runs), {}
    for name, run in runs.items():
        if not run.get("prune"):
            continue
        child = {k: copy.deepcopy(v) for k, v in run.items() if k not in ("prune", "checkpoint")}
        if run["prune"]["from"] == "observed":
            try:
                check_prunable(run["model"])
            except FlowprobeError as err:
                raise ConfigError(f"config: runs.{name}.prune: {err}") from None
            child["pruned"] = {"run": name, "from": "observed"}
        else:
            try:
                arch = pruned_architecture(run["model"], run["model_options"], run["resolution"], in_channels(run))
            except FlowprobeError as err:
                raise ConfigError(f"config: runs.{name}.prune: {err}") from None
            if arch is None:
                continue
            child.update(model=arch["model"], model_options=arch["model_options"],
                         pruned={"run": name, "from": "predicted", "removed": arch["removed"]})
        derived[name] = [name, name + PRUNED_SUFFIX]
        _add_run(out, name + PRUNED_SUFFIX, child, f"runs.{name}.prune")
    prune_figures = {n: f for n, f in figures.items() if f["kind"] == "prune"}
    return out, {**figures, **_rename_figure_runs(prune_figures, derived)}


def sweep_borders(table: pd.DataFrame, tol: float = DEFAULTS["verdicts"]["layer_tol"]) -> pd.DataFrame:
    """Per run of a resolution-sweep table: predicted border layer and observed last productive layer.

    Probe accuracies are averaged over seeds first. The predicted border layer is the first
    non-linear probe point flagged `border_layer` (None if the tail is empty); the observed last
    productive layer is the last point whose accuracy exceeds every earlier one by more than
    `tol` (verdicts' `tail` rule). Indices count probe points in forward order.

    Returns:
        Columns run, model, resolution, n_points, border_layer, border_index,
        last_productive, last_productive_index.
    """
    from flowprobe.prune import last_productive_layer, seed_mean_points

    rows = []
    for run, group in table.groupby("run", sort=False):
        points = seed_mean_points(group)
        resolution = int(group["resolution"].iloc[0])
        last = last_productive_layer(points, resolution, tol)
        border = points.index[points["border_layer"].astype(bool) & (points["kind"] != "linear")]
        rows.append({
            "run": run, "model": group["model"].iloc[0], "resolution": resolution, "n_points": len(points),
            "border_layer": points.loc[border[0], "probe_point"] if len(border) else None,
            "border_index": int(border[0]) if len(border) else None,
            "last_productive": points.loc[last, "probe_point"] if last is not None else None,
            "last_productive_index": last,
        })
    return pd.DataFrame(rows).sort_values("resolution", kind="stable", ignore_index=True)


def base_run_name(run: str, resolution: int) -> str:
    """The swept run `run` came from (`run` itself if it carries no `_r{resolution}` suffix)."""
    suffix = f"_r{resolution}"
    return run[: -len(suffix)] if run.endswith(suffix) else run


def prediction_quality(verdicts: pd.DataFrame, resolutions: dict[str, int]) -> pd.DataFrame:
    """Confusion counts of predicted vs observed verdicts, per verdict and resolution and over all.

    Args:
        verdicts: results/tables/verdicts.csv (run, verdict, level, predicted, observed, ...).
        resolutions: {run: input resolution}.

    Returns:
        Columns verdict, level, resolution ('all' for every resolution together), predicted,
        observed, outcome (agree | disagree | undecided: the observation was inconclusive),
        count, share (of the verdict × resolution total).
    """
    table = verdicts.assign(
        resolution=verdicts["run"].map(resolutions).astype("Int64").astype(str),
        predicted=verdicts["predicted"].astype(str),
        observed=verdicts["observed"].astype(str),
    )
    table = pd.concat([table, table.assign(resolution="all")], ignore_index=True)
    keys = ["verdict", "level", "resolution", "predicted", "observed"]
    counts = table.groupby(keys, sort=False).size().rename("count").reset_index()
    outcome = counts["predicted"] == counts["observed"]
    counts.insert(5, "outcome", outcome.map({True: "agree", False: "disagree"}))
    counts.loc[counts["observed"] == "undecided", "outcome"] = "undecided"
    totals = counts.groupby(["verdict", "resolution"])["count"].transform("sum")
    order = counts["resolution"].map(lambda r: float("inf") if r == "all" else int(r))
    counts = counts.assign(share=counts["count"] / totals, _order=order)
    return counts.sort_values(["verdict", "_order"], kind="stable").drop(columns="_order").reset_index(drop=True)
