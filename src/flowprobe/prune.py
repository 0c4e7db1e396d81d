"""Prune and retrain: the architecture the verdicts ask for, and what it costs.

From the border-layer rule (`flowprobe.predict`, Richter et al. 2021b) or from the observed
verdicts of a trained run:
- VGG16: the tail is cut; the convs from the border layer on are dropped and the head follows
  the last conv kept (model option `keep_convs`).
- ResNet18/34: residual blocks whose first conv is unproductive are removed (option `blocks`).
- MPNet: non-dominant pathways are removed from every block (a spec without them). Predicted
  roles use the depth rule of `flowprobe.verdicts`: a pathway more than `verdicts.depth_ratio`
  times as deep as the shallowest is non-dominant; pathways of similar depth coexist.

`pruned_architecture` returns the new (spec, model_options) or None when nothing is pruned;
`observed_architecture` does so from a trained run's probes, and `observed_pruned_spec` writes
what the workflow's `pruned_spec` rule stores (results/runs/{run}_pruned/pruned_spec.json: the
spec a `prune: {from: observed}` sibling trains, with the evidence and the probes it came from);
`model_cost` counts parameters and forward FLOPs (torch.utils.flop_counter) of any spec.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from flowprobe.errors import ConfigError
from flowprobe.models import build_model, parse_mpnet
from flowprobe.models.resnet import BLOCKS
from flowprobe.predict import predict_layers
from flowprobe.config import DEFAULTS
from flowprobe.verdicts import NO, pathway_verdicts, predicted_roles, tail_verdicts, with_intervals

TOLS = DEFAULTS["verdicts"]  # the verdicts' thresholds, defined once in the config defaults

PRUNABLE = ("VGG16", "ResNet18", "ResNet34", "MPNet{K}(...)")


def check_prunable(spec: str) -> None:
    """Raise ConfigError unless `spec` is a model family `pruned_architecture` can cut."""
    if not (spec.startswith("MPNet") or spec in ("VGG16", "ResNet18", "ResNet34")):
        raise ConfigError(f"prune: {spec} cannot be pruned yet; prunable models: {', '.join(PRUNABLE)}")


def predicted_pathway_roles(depths: list[int], depth_ratio: float = TOLS["depth_ratio"]) -> list[str]:
    """Role of each pathway (in spec order) from its depth, by the verdicts' depth rule
    (`flowprobe.verdicts.predicted_roles`): deeper than depth_ratio x the shallowest is
    'non-dominant', the shallowest then 'dominant', the rest 'coexisting'."""
    roles = predicted_roles(dict(enumerate(depths)), depth_ratio)
    return [roles[i] for i in range(len(depths))]


def _mpnet_without(spec: str, keep: list[bool]) -> str | None:
    parsed = parse_mpnet(spec)
    if all(keep):
        return None
    parsed.pathways = [p for p, k in zip(parsed.pathways, keep) if k]
    return str(parsed)


def _removed(layers: pd.DataFrame, mask) -> list[str]:
    return layers.loc[mask, "probe_point"].tolist()


def pruned_architecture(spec: str, model_options: dict, resolution: int, in_channels: int = 3,
                        roles: dict[str, str] | None = None, last_productive: str | None = None) -> dict | None:
    """The pruned model of a run, from predicted or (if given) observed verdicts.

    Args:
        spec, model_options, resolution, in_channels: the full run's model and input.
        roles: observed pathway roles {pathway label: role} (MPNet; a label missing or
            `undecided` is kept); None: predicted from depths.
        last_productive: observed last productive probe point (VGG16, ResNet); None: predicted
            by the border-layer rule at `resolution`.

    Returns:
        {'model': spec, 'model_options': options, 'removed': [removed probe points or pathways]},
        or None when nothing would be removed.

    Raises:
        ConfigError: the model family cannot be pruned.
    """
    options = copy.deepcopy(model_options or {})
    if spec.startswith("MPNet"):
        parsed = parse_mpnet(spec)
        labels = parsed.labels()
        role = roles if roles is not None else dict(
            zip(labels, predicted_pathway_roles([n for n, _, _ in parsed.pathways])))
        keep = [role.get(label) != "non-dominant" for label in labels]
        pruned = _mpnet_without(spec, keep)
        removed = [label for label, k in zip(labels, keep) if not k]
        return None if pruned is None else {"model": pruned, "model_options": options, "removed": removed}
    check_prunable(spec)
    layers = predict_layers(spec, resolution, options, in_channels)
    if last_productive is None:
        gone = layers["unproductive"].to_numpy()
    else:
        index = layers.index[layers["probe_point"] == last_productive][0]
        gone = (layers.index > index) & (layers["kind"] != "linear")
    if not gone.any():
        return None
    if spec == "VGG16":
        convs = layers[layers["kind"] == "conv"]
        options["keep_convs"] = int((~gone[convs.index]).argmin()) if gone[convs.index].any() else len(convs)
        return {"model": spec, "model_options": options, "removed": _removed(layers, gone)}
    options["blocks"] = kept = _kept_blocks(spec, options, layers, gone)
    dropped = [0 <= stage < len(kept) and block >= kept[stage] for stage, block in zip(layers["stage"], layers["block"])]
    return {"model": spec, "model_options": options, "removed": _removed(layers, dropped)}


def seed_mean_points(probes: pd.DataFrame) -> pd.DataFrame:
    """Probe points of one run in forward order with test_acc averaged over seeds."""
    keys = [c for c in ("probe_point", "stage", "block", "pathway", "position", "kind", "input_receptive_field",
                        "border_layer") if c in probes]
    return probes.groupby(keys, sort=False, dropna=False)["test_acc"].mean().reset_index()


def last_productive_layer(points: pd.DataFrame, resolution: int, tol: float = TOLS["layer_tol"]) -> int | None:
    """Index (forward order) of the last probe point observed productive: its accuracy beats the
    points on the path into it by more than `tol` (observed `tail` = no in flowprobe.verdicts);
    None if there is none."""
    tail = tail_verdicts(with_intervals(points.reset_index(drop=True)), resolution, tol)
    productive = (tail["observed"] == NO).to_numpy()
    return int(productive.nonzero()[0][-1]) if productive.any() else None


def observed_evidence(probes: pd.DataFrame, spec: str, resolution: int, layer_tol: float = TOLS["layer_tol"],
                      pathway_tol: float = TOLS["pathway_tol"], depth_ratio: float = TOLS["depth_ratio"]) -> dict:
    """The observed verdicts an observed prune rests on, from a run's probes (all seeds, seed-mean).

    Returns:
        MPNet: {'roles': {pathway label: observed role}} (verdicts' gain rule; empty for a
        single-pathway net). Sequential nets: {'last_productive': the last probe point observed
        productive, or None if none is}.
    """
    points = seed_mean_points(probes)
    if spec.startswith("MPNet"):
        roles = pathway_verdicts(points, pathway_tol, depth_ratio)
        return {"roles": {str(k): str(v) for k, v in zip(roles["pathway"], roles["observed"])}}
    index = last_productive_layer(points, resolution, layer_tol)
    return {"last_productive": None if index is None else str(points.loc[index, "probe_point"])}


def _architecture_from(evidence: dict, probes: pd.DataFrame, spec: str, model_options: dict, resolution: int,
                       in_channels: int) -> dict | None:
    if "roles" in evidence:
        return pruned_architecture(spec, model_options, resolution, in_channels, roles=evidence["roles"])
    # nothing observed productive: keep up to the first probe point (the least a net can be cut to)
    last = evidence["last_productive"] or str(seed_mean_points(probes)["probe_point"].iloc[0])
    return pruned_architecture(spec, model_options, resolution, in_channels, last_productive=last)


def observed_architecture(probes: pd.DataFrame, spec: str, model_options: dict, resolution: int,
                          in_channels: int = 3, layer_tol: float = TOLS["layer_tol"],
                          pathway_tol: float = TOLS["pathway_tol"],
                          depth_ratio: float = TOLS["depth_ratio"]) -> dict | None:
    """`pruned_architecture` from a trained run's probes (probes.csv rows of all its seeds).

    Sequential nets keep everything up to the observed last productive layer; MPNets lose the
    pathways observed non-dominant (verdicts' gain rule on seed-mean accuracies).
    """
    evidence = observed_evidence(probes, spec, resolution, layer_tol, pathway_tol, depth_ratio)
    return _architecture_from(evidence, probes, spec, model_options, resolution, in_channels)


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def observed_pruned_spec(probe_files: list[str], full: dict, tolerances: dict) -> dict:
    """What a `prune: {from: observed}` sibling trains: the record of results/runs/{run}_pruned/pruned_spec.json.

    Args:
        probe_files: probes.csv of every seed of the full run.
        full: the full run: {'run': name, 'model', 'model_options', 'resolution', 'in_channels'}.
        tolerances: the config's `verdicts` (layer_tol, pathway_tol, depth_ratio).

    Returns:
        A JSON-able dict: from ('observed'), run (the full run), model and model_options (what
        the sibling trains), removed (probe points or pathway labels), pruned (False when nothing
        is observed unproductive: the sibling then trains the full architecture again, see
        `note`), evidence (observed last productive point or pathway roles), full_model,
        full_model_options, resolution, verdicts, probes (every file read, with its SHA-256).

    Raises:
        ConfigError: the model cannot be pruned, or the observed verdicts leave nothing to train.
    """
    probes = pd.concat([pd.read_csv(f) for f in probe_files], ignore_index=True)
    spec, options, resolution = full["model"], full["model_options"], full["resolution"]
    tols = {k: tolerances[k] for k in ("layer_tol", "pathway_tol", "depth_ratio")}
    evidence = observed_evidence(probes, spec, resolution, **tols)
    try:
        arch = _architecture_from(evidence, probes, spec, options, resolution, full["in_channels"])
    except ConfigError as err:
        raise ConfigError(f"observed prune of run {full['run']}: {err}") from None
    if arch is None:
        arch = {"model": spec, "model_options": copy.deepcopy(options), "removed": []}
        note = (f"nothing is observed unproductive in {full['run']}: the pruned run trains the full "
                "architecture again (same data, schedule and seeds)")
    else:
        note = f"observed unproductive in {full['run']} and removed: {', '.join(arch['removed'])}"
    return {
        "from": "observed", "run": full["run"], "model": arch["model"], "model_options": arch["model_options"],
        "removed": list(arch["removed"]), "pruned": bool(arch["removed"]), "note": note, "evidence": evidence,
        "full_model": spec, "full_model_options": copy.deepcopy(options), "resolution": resolution,
        "verdicts": tols, "probes": [{"file": str(f), "sha256": _sha256(f)} for f in probe_files],
    }


def _kept_blocks(spec: str, options: dict, layers: pd.DataFrame, gone) -> list[int]:
    """Blocks per stage that keep their first conv: a block goes once its first conv is unproductive
    (the fields only grow along the trunk, so the removed blocks are a tail)."""
    per_stage = list(options.get("blocks") or BLOCKS[spec])
    first = layers[layers["probe_point"].str.endswith(".conv")]
    for stage in range(len(per_stage)):
        rows = first[first["stage"] == stage]
        per_stage[stage] = int((~gone[rows.index]).sum())
    if not any(per_stage):
        raise ConfigError(f"prune: every residual block of {spec} is unproductive; raise the resolution")
    return per_stage


def model_cost(spec: str, model_options: dict, resolution: int, in_channels: int = 3,
               num_classes: int = 10) -> dict:
    """Parameters and forward FLOPs per image of a model at `resolution` (meta device, no memory).

    FLOPs as torch.utils.flop_counter counts them: 2 per multiply-accumulate of convs and matmuls.

    Returns:
        {'params': int, 'flops': int}.
    """
    with torch.device("meta"):
        model = build_model(spec, num_classes, in_channels=in_channels, input_size=resolution, **model_options)
        model.eval()
        with FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, in_channels, resolution, resolution))
    return {"params": sum(p.numel() for p in model.parameters()), "flops": int(counter.get_total_flops())}


COST_COLUMNS = ["variant", "full_run", "removed", "params", "flops", "train_acc", "seconds_per_epoch", "epochs"]


def run_cost(model_path: str, train_log_path: str, run: str, pruned: dict | None) -> pd.DataFrame:
    """One row: what a trained run costs and keeps (the `prune` figure's per-run input).

    Args:
        model_path: the run's model.pt (its record rebuilds the model that was trained).
        train_log_path: its train_log.csv; train_acc is the last finished epoch's running
            (augmented) training accuracy, seconds_per_epoch the mean over finished epochs.
        run: the run's name.
        pruned: the run's `pruned` record ({run, from, removed}) or None for a full model; the
            record in model.pt wins when it has one (an observed prune: its removed units are
            known only from the spec it was trained from).

    Returns:
        DataFrame with COST_COLUMNS.
    """
    record = torch.load(model_path, map_location="cpu", weights_only=False)
    spec = record["run"]
    pruned = spec.get("pruned") or pruned
    cost = model_cost(spec["model"], spec["model_options"], record["input_size"], record["in_channels"],
                      record["num_classes"])
    log = pd.read_csv(train_log_path)
    finished = log.dropna(subset=["train_acc"])
    row = {
        "variant": "pruned" if pruned else "full",
        "full_run": pruned["run"] if pruned else run,
        "removed": " ".join(pruned["removed"]) if pruned else "",
        **cost,
        "train_acc": float(finished["train_acc"].iloc[-1]) if len(finished) else float("nan"),
        "seconds_per_epoch": float(finished["seconds"].mean()) if len(finished) else float("nan"),
        "epochs": len(finished),
    }
    return pd.DataFrame([row], columns=COST_COLUMNS)
