"""Verdicts the study gave in prose, predicted from the architecture and observed in the probes.

Rules and formulas: docs/verdicts.md. In short, for the probe points of one run (forward order,
columns of `flowprobe.models.base.POINT_COLUMNS` + test_acc [+ test_acc_lo, test_acc_hi]):

- `tail` (every point). Predicted by the border-layer rule: the point is at or after the border
  layer of its pathway lineage (the `border_layer` flags of the probe points, which follow the
  smallest-receptive-field rule of docs/experiments.md); tables without flags fall back to
  r_in >= resolution on the point's input receptive field. Observed from the gain g = a - a_ref over the best
  point on the path into it (a pathway point: earlier points of its own pathway in its block and
  earlier trunk points; a trunk point: earlier trunk points and the pathways it merges).
- `skipped` (points inside a unit a skip or a parallel path bypasses: pathway `branch`, or a
  pathway of a multi-path block). Observed from the dip d = min(a_in, a_merge) - a below the
  block input and the point after the merge. Predicted: a `branch` point in the tail; a pathway
  point whose pathway is predicted non-dominant.
- `role` (pathway labels of multi-path blocks). Predicted from depths (layers per block):
  non-dominant when deeper than `depth_ratio` x the shallowest. Observed from the mean, over
  blocks, of the last-layer accuracy gap D_p = a_best - a_p to the best pathway.

Every observation is a margin m with an interval [m_lo, m_hi] compared with a tolerance t: the
verdict is declared only when the interval clears t on one side, otherwise `undecided`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

YES, NO, UNDECIDED = "yes", "no", "undecided"
BRANCH = "branch"  # a unit a skip connection bypasses (ResNet branch, DenseNet layer, MLP span)
VERDICT_COLUMNS = [
    "run", "seed", "model", "level", "verdict", "probe_point", "pathway", "predicted", "observed", "agree",
    "threshold", "test_acc", "test_acc_lo", "test_acc_hi", "reference", "margin", "margin_lo", "margin_hi",
    "mean_gain", "depth",
]


def with_intervals(points: pd.DataFrame) -> pd.DataFrame:
    """`points` in forward order with a fresh index and test_acc_lo/hi (the point itself when absent)."""
    points = points.reset_index(drop=True)
    for col in ("test_acc_lo", "test_acc_hi"):
        if col not in points:
            points[col] = points["test_acc"]
        points[col] = points[col].fillna(points["test_acc"])
    return points


def difference(a: pd.DataFrame, b: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """m = a - b with its interval, the half-widths added in quadrature.

    Both accuracies are measured on the same test images with positively correlated errors, so
    Var(a - b) <= Var(a) + Var(b): the quadrature interval is conservative.
    """
    a_acc, b_acc = a["test_acc"].to_numpy(float), b["test_acc"].to_numpy(float)
    below = np.hypot(a_acc - a["test_acc_lo"].to_numpy(float), b["test_acc_hi"].to_numpy(float) - b_acc)
    above = np.hypot(a["test_acc_hi"].to_numpy(float) - a_acc, b_acc - b["test_acc_lo"].to_numpy(float))
    m = a_acc - b_acc
    return m, m - below, m + above


def exceeds(lo, hi, tol: float) -> np.ndarray:
    """`yes` when the interval lies above tol, `no` when at or below it, else `undecided`."""
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    return np.where(lo > tol, YES, np.where(hi <= tol, NO, UNDECIDED))


def is_pathway(points: pd.DataFrame) -> pd.Series:
    """Points on a pathway of a multi-path block (>= 2 non-trunk, non-branch labels in the block)."""
    inside = ~points["pathway"].isin(["trunk", BRANCH])
    labels = points[inside].groupby(["stage", "block"])["pathway"].nunique()
    multi = set(labels[labels > 1].index)
    return inside & pd.Series([(s, b) in multi for s, b in zip(points["stage"], points["block"])], index=points.index)


def block_neighbours(points: pd.DataFrame) -> pd.DataFrame:
    """Per point: `block_input` (the trunk point before its unit) and `merge` (the trunk point after it).

    Trunk points get themselves; a unit is the run of non-trunk points of one (stage, block).
    """
    names, trunk = points["probe_point"].tolist(), (points["pathway"] == "trunk").tolist()
    keys = list(zip(points["stage"], points["block"]))
    before, after = [None] * len(names), [None] * len(names)
    last_trunk, start = None, {}
    for i, name in enumerate(names):
        if trunk[i]:
            last_trunk, before[i] = name, name
        else:
            before[i] = start.setdefault(keys[i], last_trunk)
    next_trunk = None
    for i in reversed(range(len(names))):
        if trunk[i]:
            next_trunk, after[i] = names[i], names[i]
        else:
            after[i] = next_trunk
    return pd.DataFrame({"block_input": before, "merge": after}, index=points.index)


def tail_references(points: pd.DataFrame) -> list[int | None]:
    """Index of the best point on the path into each point (issue 16: within a pathway, or the
    trunk before it; a merge compares with what it merges), None for the first point."""
    refs = []
    for i, row in enumerate(points.itertuples()):
        earlier = points.iloc[:i]
        if row.pathway == "trunk":
            own = (earlier["pathway"] == "trunk") | ((earlier["stage"] == row.stage) & (earlier["block"] == row.block))
        else:
            same = (earlier["stage"] == row.stage) & (earlier["block"] == row.block) & (earlier["pathway"] == row.pathway)
            own = (earlier["pathway"] == "trunk") | same
        candidates = earlier[own]
        refs.append(int(candidates["test_acc"].idxmax()) if len(candidates) else None)
    return refs


def _rows(points: pd.DataFrame, refs: list) -> pd.DataFrame:
    """The reference points `refs` (indices, None allowed) as rows aligned with `points`."""
    filler = {"test_acc": np.nan, "test_acc_lo": np.nan, "test_acc_hi": np.nan, "probe_point": ""}
    return pd.DataFrame([points.loc[r] if r is not None else pd.Series(filler) for r in refs]).reset_index(drop=True)


def predicted_tail(points: pd.DataFrame, resolution: int) -> np.ndarray:
    """Per point (forward order): at or after the border layer of its pathway lineage.

    With `border_layer` flags (one per lineage, from the model's receptive fields) a point is in
    the tail once its lineage has passed its border; without them, when its input receptive field
    already covers the image (r_in >= resolution; the two agree on sequential nets)."""
    if "border_layer" in points:
        flags = points["border_layer"].astype(str).str.lower().isin(["true", "1"])
        return flags.groupby(points["pathway"], sort=False).cummax().to_numpy()
    return points["input_receptive_field"].to_numpy() >= resolution


def tail_verdicts(points: pd.DataFrame, resolution: int, tol: float) -> pd.DataFrame:
    """Per point: predicted tail (border-layer rule) and observed tail (gain interval <= tol)."""
    ref = _rows(points, tail_references(points))
    gain, lo, hi = difference(points, ref)
    improves = exceeds(lo, hi, tol)  # the layer adds more than tol: not in the tail
    observed = np.where(np.isnan(gain) | (improves == YES), NO, np.where(improves == NO, YES, UNDECIDED))
    predicted = np.where(predicted_tail(points, resolution), YES, NO)
    return points.assign(verdict="tail", predicted=predicted, observed=observed, threshold=tol,
                         reference=ref["probe_point"].to_numpy(), margin=gain, margin_lo=lo, margin_hi=hi)


def skipped_verdicts(points: pd.DataFrame, resolution: int, tol: float, roles: pd.DataFrame) -> pd.DataFrame:
    """Per point inside a bypassed unit: predicted and observed `skipped` (dip interval > tol)."""
    pathway = is_pathway(points)
    inside = pathway | (points["pathway"] == BRANCH)
    units = points[inside]
    if units.empty:
        return units.assign(verdict="skipped")
    near = block_neighbours(points)[inside]
    acc = dict(zip(points["probe_point"], points["test_acc"]))
    index = {name: i for i, name in enumerate(points["probe_point"])}
    # the lower of block input and merge: a dip must fall below both neighbours
    lower = [m if m is not None and acc[m] < acc.get(b, np.inf) else b
             for b, m in zip(near["block_input"], near["merge"])]
    ref = _rows(points, [index.get(n) for n in lower])
    dip, lo, hi = difference(ref, units)
    non_dominant = set(roles.loc[roles["predicted"] == "non-dominant", "pathway"]) if len(roles) else set()
    in_tail = predicted_tail(points, resolution)[inside.to_numpy()]
    predicted = np.where(pathway[inside], units["pathway"].isin(non_dominant), in_tail)
    return units.assign(verdict="skipped", predicted=np.where(predicted, YES, NO), observed=exceeds(lo, hi, tol),
                        threshold=tol, reference=ref["probe_point"].to_numpy(), margin=dip, margin_lo=lo, margin_hi=hi)


def predicted_roles(depths: dict[str, float], depth_ratio: float) -> dict[str, str]:
    """Roles from pathway depths (layers per block): deeper than depth_ratio x the shallowest is
    `non-dominant`; the shallowest is then `dominant`; everything else `coexisting`."""
    shallowest = min(depths.values())
    deep = {p for p, d in depths.items() if d > depth_ratio * shallowest}
    return {p: "non-dominant" if p in deep else ("dominant" if deep and d == shallowest else "coexisting")
            for p, d in depths.items()}


def pathway_verdicts(points: pd.DataFrame, tol: float, depth_ratio: float) -> pd.DataFrame:
    """Per pathway label of the multi-path blocks: depth, mean gain, predicted and observed role."""
    points = with_intervals(points)
    columns = ["pathway", "depth", "mean_gain", "predicted", "observed", "reference", "margin", "margin_lo",
               "margin_hi"]
    on_pathway = points[is_pathway(points)]
    if on_pathway.empty:
        return pd.DataFrame(columns=columns)
    near = block_neighbours(points)
    last = on_pathway.groupby(["stage", "block", "pathway"], sort=False).tail(1)
    index = {name: i for i, name in enumerate(points["probe_point"])}
    block_in = _rows(points, [index.get(n) for n in near.loc[last.index, "block_input"]])
    gain, _, _ = difference(last, block_in)
    last = last.assign(gain=gain, depth=on_pathway.groupby(["stage", "block", "pathway"], sort=False).size().to_numpy())
    summary = last.groupby("pathway", sort=False).agg(depth=("depth", "mean"), mean_gain=("gain", "mean"))
    best = summary["mean_gain"].idxmax()
    gaps = _mean_gaps(last, best)
    observed = _observed_roles(gaps, best, tol)
    predicted = predicted_roles(summary["depth"].to_dict(), depth_ratio)
    out = summary.reset_index().assign(predicted=lambda t: t["pathway"].map(predicted),
                                       observed=lambda t: t["pathway"].map(observed), reference=best)
    return out.merge(gaps, on="pathway", how="left").reindex(columns=columns)


def _mean_gaps(last: pd.DataFrame, best: str) -> pd.DataFrame:
    """Per pathway p: mean over blocks of D = a_best - a_p at the last layers, with its interval
    (per-block quadrature half-widths, averaged: no independence across blocks assumed)."""
    top = last[last["pathway"] == best].set_index(["stage", "block"])
    rows = []
    for label, mine in last.groupby("pathway", sort=False):
        mine = mine.set_index(["stage", "block"])
        shared = mine.index.intersection(top.index)
        d, lo, hi = difference(top.loc[shared], mine.loc[shared])
        rows.append({"pathway": label, "margin": d.mean(), "margin_lo": lo.mean(), "margin_hi": hi.mean()})
    return pd.DataFrame(rows)


def _observed_roles(gaps: pd.DataFrame, best: str, tol: float) -> dict[str, str]:
    """Others: non-dominant when the gap's interval lies above tol, coexisting when at or below;
    the best: dominant if any other is non-dominant, coexisting if all others coexist."""
    others = gaps[gaps["pathway"] != best]
    decided = dict(zip(others["pathway"], exceeds(others["margin_lo"], others["margin_hi"], tol)))
    roles = {p: {YES: "non-dominant", NO: "coexisting", UNDECIDED: UNDECIDED}[v] for p, v in decided.items()}
    if "non-dominant" in roles.values():
        roles[best] = "dominant"
    elif roles and all(v == "coexisting" for v in roles.values()):
        roles[best] = "coexisting"
    else:
        roles[best] = UNDECIDED
    return roles


def pool_seeds(probes: pd.DataFrame) -> pd.DataFrame:
    """One row per run x probe point over a run's seeds, labelled seed 'pooled': test_acc the seed
    mean, [test_acc_lo, test_acc_hi] the envelope of the seeds' intervals (min lo, max hi), so
    it holds both every seed's bootstrap interval and the seed-to-seed spread."""
    probes = with_intervals(probes)
    multi = probes.groupby("run")["seed"].transform("nunique") > 1
    if not multi.any():
        return probes.iloc[:0]
    keys = ["run", "model", "probe_point"]
    grouped = probes[multi].groupby(keys, sort=False)
    pooled = grouped.first().assign(test_acc=grouped["test_acc"].mean(), test_acc_lo=grouped["test_acc_lo"].min(),
                                    test_acc_hi=grouped["test_acc_hi"].max(), seed="pooled")
    return pooled.reset_index()


def run_verdicts(points: pd.DataFrame, resolution: int, layer_tol: float, pathway_tol: float,
                 depth_ratio: float) -> pd.DataFrame:
    """Verdict rows (tail, skipped, role) of one run x seed."""
    points = with_intervals(points)
    roles = pathway_verdicts(points, pathway_tol, depth_ratio)
    parts = [tail_verdicts(points, resolution, layer_tol), skipped_verdicts(points, resolution, layer_tol, roles)]
    parts = [p.assign(level="layer") for p in parts]
    if len(roles):
        parts.append(roles.assign(level="pathway", verdict="role", probe_point="", threshold=pathway_tol))
    out = pd.concat([p for p in parts if len(p)], ignore_index=True)
    return out.assign(agree=agreement(out["predicted"], out["observed"]))


def agreement(predicted: pd.Series, observed: pd.Series) -> np.ndarray:
    """`yes` / `no` where the observation is decided, `undecided` where it is not."""
    return np.where(observed == UNDECIDED, UNDECIDED, np.where(predicted == observed, YES, NO))


def verdict_table(probes: pd.DataFrame, resolutions: dict[str, int], layer_tol: float, pathway_tol: float,
                  depth_ratio: float) -> pd.DataFrame:
    """Long verdict table: per run x seed, plus seed 'pooled' for runs with several seeds.

    Args:
        probes: figure table of probe accuracies (run, seed, model, point columns, test_acc[_lo/_hi]).
        resolutions: input resolution of every run.
        layer_tol, pathway_tol, depth_ratio: the thresholds of config `verdicts:`.

    Returns:
        One row per verdict with the columns of VERDICT_COLUMNS.
    """
    both = pd.concat([probes, pool_seeds(probes)], ignore_index=True)
    rows = []
    for (run, seed, model), points in both.groupby(["run", "seed", "model"], sort=False):
        verdicts = run_verdicts(points, resolutions[run], layer_tol, pathway_tol, depth_ratio)
        rows.append(verdicts.assign(run=run, seed=seed, model=model))
    return pd.concat(rows, ignore_index=True).reindex(columns=VERDICT_COLUMNS)
