"""Pathway ablation: test accuracy with a pathway removed (DESIGN.md §5; the study's ~2.16 points).

Removing a pathway = zeroing its last probe point in the block (`Tap.ablate`), so with an
additive merge the block computes the sum of the remaining pathways; with a concat merge
the 1x1 conv sees zeros in that pathway's channels. Targets: every block with more than one
pathway x each of its pathways (scope 'each'), and each pathway label removed in all those
blocks at once (scope 'all'). The model's ablate flags are always restored.
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

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
ABLATION_COLUMNS = ["target", "pathway", "accuracy", "accuracy_intact", "delta"]
SCOPES = ("each", "all", "both")


@dataclass
class FineTune:
    """Optional SGD fine-tuning of an ablated copy before it is evaluated."""

    train_batches_fn: Callable[[], Batches]
    epochs: int = 1
    lr: float = 0.01
    momentum: float = 0.9


def pathway_ends(model: nn.Module) -> dict[str, dict[str, Tap]]:
    """{block id 's{stage}.b{block}': {pathway: its last tap}} for blocks with > 1 pathway."""
    blocks: dict[str, dict[str, Tap]] = {}
    for tap in taps(model):
        p = tap.point
        if p.pathway == "trunk":
            continue
        ends = blocks.setdefault(f"s{p.stage}.b{p.block}", {})
        if p.pathway not in ends or p.position > ends[p.pathway].point.position:
            ends[p.pathway] = tap
    return {block: ends for block, ends in blocks.items() if len(ends) > 1}


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


def _finetune(model: nn.Module, plan: FineTune) -> None:
    device = next(model.parameters()).device
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=plan.lr, momentum=plan.momentum)
    model.train()
    for _ in range(plan.epochs):
        for x, y in plan.train_batches_fn():
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x.to(device)), y.to(device)).backward()
            optimizer.step()


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
        tuned = copy.deepcopy(model)  # the copy carries the ablate flags; the model is not trained
        _finetune(tuned, finetune)
        return acc, accuracy(tuned, batches_fn())
    finally:
        for t, flag in zip(chosen, saved):
            t.ablate = flag


def ablation_table(model: nn.Module, batches_fn: Callable[[], Batches], scope: str = "both",
                   finetune: FineTune | None = None, device: str | torch.device | None = None
                   ) -> pd.DataFrame:
    """Test accuracy intact and with pathways removed.

    batches_fn() returns a fresh iterable of (x, y) test batches. Rows: target 'intact'
    (pathway 'none'), then per target (block id or 'all') and pathway the accuracy, the intact
    accuracy and delta = accuracy - accuracy_intact. With `finetune`, each ablated model is
    fine-tuned on a deep copy and `accuracy_finetuned`, `delta_finetuned` are added.
    """
    if scope not in SCOPES:
        raise ConfigError(f"ablation scope={scope!r}; use one of {SCOPES}")
    if device is not None:
        model.to(device)
    intact = accuracy(model, batches_fn())
    rows = [{"target": "intact", "pathway": "none", "accuracy": intact, "accuracy_intact": intact,
             "delta": 0.0}]
    if finetune is not None:
        rows[0].update(accuracy_finetuned=intact, delta_finetuned=0.0)
    for target, label, chosen in _targets(pathway_ends(model), scope):
        acc, tuned = _ablated_accuracy(model, chosen, batches_fn, finetune)
        row = {"target": target, "pathway": label, "accuracy": acc, "accuracy_intact": intact,
               "delta": acc - intact}
        if finetune is not None:
            row.update(accuracy_finetuned=tuned, delta_finetuned=tuned - intact)
        rows.append(row)
    columns = ABLATION_COLUMNS + (["accuracy_finetuned", "delta_finetuned"] if finetune else [])
    return pd.DataFrame(rows, columns=columns)
