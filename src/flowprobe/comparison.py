"""results/tables/paper_comparison.csv: every value and claim of the paper beside the measured one.

One row per claim of `flowprobe.paper.CLAIMS` and run of the config it applies to (claims no run
applies to get one row with agree 'no run'). `agree` is yes / no / undecided (the measurement's
interval or the verdicts could not decide) / n.a. (nothing to measure, e.g. no probe point of the
kind the claim is about); `scale` says how the run differs from the paper's setting.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from flowprobe.paper import CLAIMS, Claim, claims_for, scale
from flowprobe.tables import final_test_accuracy
from flowprobe.verdicts import NO, UNDECIDED, YES

COMPARISON_COLUMNS = [
    "figure", "model", "quantity", "claim", "paper_value", "tolerance", "run", "dataset", "resolution", "n_seeds",
    "measured", "measured_lo", "measured_hi", "agree", "scale",
]


def verdict_rows(verdicts: pd.DataFrame, run: str) -> pd.DataFrame:
    """The run's verdict rows over its seeds pooled (a single seed's rows when it has one)."""
    mine = verdicts[verdicts["run"] == run]
    pooled = mine[mine["seed"].astype(str) == "pooled"]
    return pooled if len(pooled) else mine


def within(value: float, lo: float, hi: float, target: float, tol: float) -> str:
    """yes when the value is within tol of the target, undecided when only its interval reaches."""
    if np.isnan(value):
        return "n.a."
    if abs(value - target) <= tol:
        return YES
    return UNDECIDED if lo - tol <= target <= hi + tol else NO


def tally(observed: pd.Series, expected: str) -> tuple[str, str]:
    """('k yes / m no / u undecided', agree): no if a decided verdict contradicts the claim,
    undecided if none is decided, yes otherwise; n.a. without verdicts."""
    if observed.empty:
        return "no such probe points", "n.a."
    counts = observed.value_counts()
    text = " / ".join(f"{counts.get(v, 0)} {v}" for v in (YES, NO, UNDECIDED))
    decided = observed[observed != UNDECIDED]
    if decided.empty:
        return text, UNDECIDED
    return text, YES if (decided == expected).all() else NO


def skipped_points(rows: pd.DataFrame, select: str) -> pd.Series:
    """Observed `skipped` of the probe points a claim is about."""
    skipped = rows[(rows["verdict"] == "skipped") & (rows["pathway"] == "branch")]
    names = skipped["probe_point"].astype(str)
    if select == "last_stage_new":
        stages = names.str.extract(r"^s(\d+)\.")[0].astype(float)
        skipped = skipped[names.str.endswith(".new") & (stages == stages.max())]
    elif select == "tail_branch_outputs":
        tail = rows[(rows["verdict"] == "tail") & (rows["predicted"] == YES)]["probe_point"]
        skipped = skipped[names.str.endswith(".branch") & names.isin(set(tail))]
    return skipped["observed"]


def measure(claim: Claim, verdicts: pd.DataFrame, files: list[dict]) -> dict:
    """measured, measured_lo, measured_hi and agree of one claim on one run (files: one dict per seed)."""
    rows = verdict_rows(verdicts, files[0]["run"])
    if claim.quantity == "test_accuracy":
        accs = np.array([final_test_accuracy(f["train_log.csv"])[0] for f in files])
        lo, hi, mean = accs.min(), accs.max(), accs.mean()
        return {"measured": mean, "measured_lo": lo, "measured_hi": hi,
                "agree": within(mean, lo, hi, claim.value, claim.tolerance)}
    if claim.quantity == "ablation_drop":
        drops = []
        for f in files:
            summary = pd.read_csv(f["ablation.csv"]).query("target == 'non-dominant'")
            drops += list(-summary["delta"])
        if not drops:
            return {"measured": "no predicted non-dominant pathway", "agree": "n.a."}
        mean = float(np.mean(drops))
        return {"measured": mean, "measured_lo": min(drops), "measured_hi": max(drops),
                "agree": within(mean, min(drops), max(drops), claim.value, claim.tolerance)}
    if claim.quantity == "cka_diagonal":
        cka = pd.concat([pd.read_csv(f["cka_pathways.csv"]) for f in files])
        diagonal = cka[cka["position_a"] == cka["position_b"]].groupby("position_a")["cka"].mean()
        low, high = claim.value
        agree = YES if diagonal.min() >= low - claim.tolerance and diagonal.max() <= high + claim.tolerance else NO
        return {"measured": f"{diagonal.min():.2f}-{diagonal.max():.2f}", "measured_lo": diagonal.min(),
                "measured_hi": diagonal.max(), "agree": agree}
    return _measure_verdicts(claim, rows)


def _measure_verdicts(claim: Claim, rows: pd.DataFrame) -> dict:
    """Claims read from verdicts.csv: border layer, tail after it, skipped units, roles."""
    tail = rows[rows["verdict"] == "tail"]
    if claim.quantity == "border_layer":
        border = tail.loc[tail["predicted"] == YES, "probe_point"]
        found = border.iloc[0] if len(border) else "none"
        return {"measured": found, "agree": YES if found == claim.value else NO}
    if claim.quantity == "tail_after_border":
        after = tail[(tail["predicted"] == YES).cummax()].iloc[1:]
        measured, agree = tally(after["observed"], claim.value)
        return {"measured": measured, "agree": agree}
    if claim.quantity == "skipped":
        measured, agree = tally(skipped_points(rows, claim.select), claim.value)
        return {"measured": measured, "agree": agree}
    roles = rows[rows["verdict"] == "role"].set_index("pathway")["observed"].to_dict()
    if not roles:
        return {"measured": "no multi-path blocks", "agree": "n.a."}
    contradicts = any(roles.get(p) not in (r, UNDECIDED) for p, r in claim.value.items())
    agree = NO if contradicts else (UNDECIDED if UNDECIDED in roles.values() else YES)
    return {"measured": ", ".join(f"{p}={r}" for p, r in roles.items()), "agree": agree}


def paper_comparison(runs: dict[str, dict], members: list[dict], verdicts: pd.DataFrame) -> pd.DataFrame:
    """The comparison table.

    Args:
        runs: config runs (defaults filled in) by name.
        members: one dict per run x seed: {run, seed, files: {name: path}} (files of `files_needed`).
        verdicts: the verdict table (flowprobe.verdicts.verdict_table).

    Returns:
        One row per claim x applicable run, columns COMPARISON_COLUMNS.
    """
    applicable = {name: claims_for(run) for name, run in runs.items()}
    rows = []
    for claim in CLAIMS:  # in the paper's figure order
        names = [name for name, claims in applicable.items() if claim in claims]
        for name in names:
            run = runs[name]
            files = [m["files"] | {"run": name} for m in members if m["run"] == name]
            row = _describe(claim) | {"run": name, "dataset": run["dataset"], "resolution": run["resolution"],
                                      "n_seeds": len(files), "scale": scale(run, claim)}
            rows.append(row | measure(claim, verdicts, files))
        if not names:
            rows.append(_describe(claim) | {"agree": "no run"})
    return pd.DataFrame(rows).reindex(columns=COMPARISON_COLUMNS)


def _describe(claim: Claim) -> dict:
    value = claim.value
    if isinstance(value, dict):
        value = ", ".join(f"{p}={r}" for p, r in value.items())
    elif isinstance(value, tuple):
        value = "-".join(f"{v:.2f}" for v in value)
    return {"figure": claim.figure, "model": claim.model, "quantity": claim.quantity, "claim": claim.claim,
            "paper_value": value, "tolerance": claim.tolerance}
