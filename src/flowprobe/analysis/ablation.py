"""Ablation of every bypassable unit: test accuracy with a unit removed (docs/verdicts.md).

A unit is the run of non-trunk probe points of one (stage, block, pathway): an MPNet pathway,
a ResNet residual branch, a DenseNet layer's new features, the MLP's skipped span (pathway
`branch`). Removing it = zeroing its last probe point (`Tap.ablate`): an additive merge then
sums the remaining pathways (a ResNet block becomes its shortcut, the MLP's add passes fc1 on),
a concat merge sees zeros in the unit's channels. Targets: every unit (scope 'each') and each
pathway label removed in all blocks at once (scope 'all'). With `depth_ratio`, a summary row
(target 'non-dominant') gives the paper's quantity: the accuracy lost when the predicted
non-dominant pathway is removed from every block (paper: 2.16 points), and in
`delta_block_mean` the mean loss of removing it from one block at a time.
The model's ablate flags are always restored.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Iterable

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from flowprobe.errors import AnalysisError, ConfigError
from flowprobe.models.base import Tap, taps
from flowprobe.verdicts import BRANCH, predicted_roles

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
ABLATION_COLUMNS = ["target", "pathway", "accuracy", "accuracy_intact", "delta", "role", "delta_block_mean"]
NON_DOMINANT = "non-dominant"
SCOPES = ("each", "all", "both")


@dataclass
class FineTune:
    """Optional SGD fine-tuning of an ablated copy before it is evaluated."""

    train_batches_fn: Callable[[], Batches]
    epochs: int = 1
    lr: float = 0.01
    momentum: float = 0.9


def unit_taps(model: nn.Module) -> dict[str, dict[str, list[Tap]]]:
    """{block id 's{stage}.b{block}': {pathway: its taps in forward order}} for every non-trunk unit."""
    blocks: dict[str, dict[str, list[Tap]]] = {}
    for tap in taps(model):
        p = tap.point
        if p.pathway != "trunk":
            blocks.setdefault(f"s{p.stage}.b{p.block}", {}).setdefault(p.pathway, []).append(tap)
    return blocks


def pathway_ends(model: nn.Module) -> dict[str, dict[str, Tap]]:
    """{block id: {pathway: its last tap}}: what zeroing removes, for every bypassable unit."""
    return {block: {label: max(unit, key=lambda t: t.point.position) for label, unit in units.items()}
            for block, units in unit_taps(model).items()}


def unit_roles(model: nn.Module, depth_ratio: float) -> dict[str, str]:
    """Predicted role of every non-trunk label (flowprobe.verdicts.predicted_roles on the layers
    per block of the multi-path blocks); `branch` units are 'bypassed'."""
    depths: dict[str, list[int]] = {}
    for units in unit_taps(model).values():
        if len(units) > 1 and BRANCH not in units:
            for label, unit in units.items():
                depths.setdefault(label, []).append(len(unit))
    roles = predicted_roles({k: sum(v) / len(v) for k, v in depths.items()}, depth_ratio) if depths else {}
    return roles | ({BRANCH: "bypassed"} if any(BRANCH in u for u in unit_taps(model).values()) else {})


@torch.no_grad()
def accuracy(model: nn.Module, batches: Batches) -> float:
    """Top-1 accuracy of `model` in eval mode over `batches` (fraction in [0, 1])."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for x, y in batches:
            y = y.to(device)
            correct += (model(x.to(device)).argmax(1) == y).sum().item()
            total += y.numel()
    finally:
        model.train(was_training)
    if total == 0:
        raise AnalysisError("accuracy over zero samples; batches_fn() returned no test batches")
    return correct / total


def _targets(ends: dict[str, dict[str, Tap]], scope: str) -> list[tuple[str, str, list[Tap]]]:
    """(target, pathway, taps to zero) for every ablation of `scope`."""
    out = []
    if scope in ("each", "both"):
        out += [(block, label, [tap]) for block, labels in ends.items() for label, tap in labels.items()]
    if scope in ("all", "both"):
        labels = dict.fromkeys(label for labels in ends.values() for label in labels)
        out += [("all", label, [e[label] for e in ends.values() if label in e]) for label in labels]
    return out


def finetuned_copy(model: nn.Module, plan: FineTune) -> nn.Module:
    """A deep copy of `model` (ablate flags included) trained by SGD for `plan.epochs` epochs."""
    tuned = copy.deepcopy(model)
    device = next(tuned.parameters()).device
    trainable = [p for p in tuned.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=plan.lr, momentum=plan.momentum)
    tuned.train()
    for _ in range(plan.epochs):
        for x, y in plan.train_batches_fn():
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(tuned(x.to(device)), y.to(device)).backward()
            optimizer.step()
    return tuned.eval()


def _ablated_accuracy(model: nn.Module, chosen: list[Tap], batches_fn: Callable[[], Batches],
                      finetune: FineTune | None) -> tuple[float, float | None]:
    """Accuracy with `chosen` zeroed; flags restored whatever happens."""
    saved = [t.ablate for t in chosen]
    try:
        for t in chosen:
            t.ablate = True
        acc = accuracy(model, batches_fn())
        if finetune is None:
            return acc, None
        return acc, accuracy(finetuned_copy(model, finetune), batches_fn())  # the model itself is not trained
    finally:
        for t, flag in zip(chosen, saved):
            t.ablate = flag


def ablation_table(model: nn.Module, batches_fn: Callable[[], Batches], scope: str = "both",
                   finetune: FineTune | None = None, device: str | torch.device | None = None,
                   depth_ratio: float | None = None) -> pd.DataFrame:
    """Test accuracy intact and with each bypassable unit removed.

    Args:
        model: a flowprobe model (its taps name the units).
        batches_fn: returns a fresh iterable of (x, y) test batches.
        scope: 'each' (one unit), 'all' (a pathway label in every block) or 'both'.
        finetune: fine-tune every ablated model (a deep copy) before a second evaluation.
        device: move the model here first.
        depth_ratio: config `verdicts.depth_ratio`; given, roles are predicted and a summary row
            'non-dominant' is added when some pathway is predicted non-dominant.

    Returns:
        Rows 'intact' (pathway 'none'), then per target (block id or 'all') and pathway: accuracy,
        accuracy_intact, delta = accuracy - accuracy_intact, role (predicted; empty without
        depth_ratio); the summary row also holds delta_block_mean. With `finetune`:
        accuracy_finetuned and delta_finetuned.
    """
    if scope not in SCOPES:
        raise ConfigError(f"ablation scope={scope!r}; use one of {SCOPES}")
    if device is not None:
        model.to(device)
    roles = unit_roles(model, depth_ratio) if depth_ratio is not None else {}
    intact = accuracy(model, batches_fn())
    rows = [_row("intact", "none", intact, intact, None if finetune is None else intact)]
    ends = pathway_ends(model)
    for target, label, chosen in _targets(ends, scope):
        acc, tuned = _ablated_accuracy(model, chosen, batches_fn, finetune)
        rows.append(_row(target, label, acc, intact, tuned))
    non_dominant = [label for label, role in roles.items() if role == NON_DOMINANT]
    if non_dominant:
        done = {(r["target"], r["pathway"]): r["accuracy"] for r in rows}
        rows.append(_summary_row(model, ends, non_dominant, batches_fn, finetune, intact, done))
    columns = ABLATION_COLUMNS + (["accuracy_finetuned", "delta_finetuned"] if finetune else [])
    table = pd.DataFrame(rows, columns=columns)
    table["role"] = [roles.get(label, "") for label in table["pathway"]]
    table.loc[table["target"] == NON_DOMINANT, "role"] = NON_DOMINANT
    return table


def _row(target: str, pathway: str, acc: float, intact: float, tuned: float | None) -> dict:
    row = {"target": target, "pathway": pathway, "accuracy": acc, "accuracy_intact": intact, "delta": acc - intact}
    if tuned is not None:
        row.update(accuracy_finetuned=tuned, delta_finetuned=tuned - intact)
    return row


def _summary_row(model: nn.Module, ends: dict[str, dict[str, Tap]], labels: list[str],
                 batches_fn: Callable[[], Batches], finetune: FineTune | None, intact: float,
                 done: dict[tuple[str, str], float]) -> dict:
    """The non-dominant pathway(s) removed from every block at once, and the mean one-block loss
    (one-block accuracies taken from `done` {(block, label): accuracy} where already measured)."""
    chosen = [(block, label, units[label]) for block, units in ends.items() for label in labels if label in units]
    acc, tuned = _ablated_accuracy(model, [tap for *_, tap in chosen], batches_fn, finetune)
    per_block = [done.get((block, label)) for block, label, _ in chosen]
    per_block = [(a if a is not None else accuracy_without(model, [tap], batches_fn)) - intact
                 for a, (*_, tap) in zip(per_block, chosen)]
    row = _row(NON_DOMINANT, "+".join(labels), acc, intact, tuned)
    return row | {"delta_block_mean": sum(per_block) / len(per_block)}


def accuracy_without(model: nn.Module, chosen: list[Tap], batches_fn: Callable[[], Batches]) -> float:
    """Test accuracy with the units ending at `chosen` removed (no fine-tuning)."""
    return _ablated_accuracy(model, chosen, batches_fn, None)[0]
