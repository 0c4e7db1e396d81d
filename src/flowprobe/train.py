"""Training a model of the zoo on an in-memory dataset, with per-epoch logs and checkpoints.

Schedule of the study (phd-lab): SGD, lr 0.1 multiplied by `lr_gamma` every `lr_step` epochs.
Every epoch ends with a checkpoint (flowprobe.checkpoint), so a killed job resumes from its last
finished epoch and reaches the same weights as an uninterrupted run: the checkpoint belongs to
one setting (its fingerprint), and every random stream of epoch e (batch order, augmentation,
dropout) is derived from (seed, e) at the start of the epoch (flowprobe.data.loader.stream_seed).
The training step makes no host sync: losses and hits stay on the device until the epoch ends,
where one transfer also checks that every batch's loss was finite.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from flowprobe.checkpoint import load_checkpoint, save_checkpoint, training_identity
from flowprobe.config import DEFAULTS
from flowprobe.data import Batches, Dataset
from flowprobe.data.loader import MODEL_STREAM, stream_seed
from flowprobe.devices import resolve_device
from flowprobe.errors import TrainingError
from flowprobe.logs import with_progress

log = logging.getLogger(__name__)

LOG_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds", "diverged"]
_DEFAULT = DEFAULTS["defaults"]["train"]  # the one place the defaults live: the config's


@dataclass(frozen=True)
class TrainSettings:
    """A run's `train:` settings; each default is the config's (flowprobe.config.DEFAULTS)."""

    epochs: int = _DEFAULT["epochs"]
    batch_size: int = _DEFAULT["batch_size"]
    lr: float = _DEFAULT["lr"]
    momentum: float = _DEFAULT["momentum"]
    weight_decay: float = _DEFAULT["weight_decay"]
    lr_step: int = _DEFAULT["lr_step"]
    lr_gamma: float = _DEFAULT["lr_gamma"]
    on_divergence: str = _DEFAULT["on_divergence"]  # stop | record
    optimizer: str = _DEFAULT["optimizer"]  # sgd | adam
    augment: bool = _DEFAULT["augment"]  # random crop (4-px padding) + horizontal flip


assert {f.name for f in fields(TrainSettings)} == set(_DEFAULT), "TrainSettings and config defaults disagree"


def _autocast(device: torch.device):
    # bf16 autocast only where it is fast and safe (CUDA); CPU stays float32 for determinism.
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def evaluate(model: nn.Module, batches) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `model` in eval mode over `batches` (one host sync)."""
    model.eval()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    count = 0
    for x, y in batches:
        with _autocast(device):
            logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        count += len(y)
    return loss_sum.item() / max(count, 1), correct.item() / max(count, 1)


def train_model(
    model: nn.Module,
    data: Dataset,
    settings: TrainSettings,
    *,
    seed: int,
    log_path: str | Path,
    checkpoint_path: str | Path,
    device: str | None = "auto",
    progress: bool = True,
    model_spec: dict | None = None,
) -> dict:
    """Train `model` in place, resuming from `checkpoint_path` when it holds this very training.

    Args:
        model: a freshly initialised model (its initial weights come from `seed`).
        data: train and test split; the test split is evaluated after every epoch.
        settings: the schedule and optimizer.
        seed: the run's seed; with the epoch it keys every random stream.
        log_path: receives one CSV row per epoch (rows of epochs a resume redoes are dropped).
        checkpoint_path: the state after the last finished epoch; the caller removes it once
            the final model is written.
        device: "auto", "cpu", "cuda", ...
        progress: report progress per batch (a bar on a terminal, lines in a log).
        model_spec: what the caller built the model from (e.g. spec and options); part of the
            checkpoint's identity, so a change is named in the "started fresh" log line.

    Returns:
        {"test_loss", "test_accuracy", "diverged", "diverged_at", "epochs", "settings",
        "resumed_from"}: on divergence with `on_divergence: record` the model keeps the weights
        of its last finished epoch.
    """
    dev = resolve_device(device)
    model.to(dev)
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
    identity = training_identity(model, data, asdict(settings), seed, model_spec)
    opt = _optimizer(model, settings)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=settings.lr_step, gamma=settings.lr_gamma)
    train_batches = Batches(
        data.train, batch_size=settings.batch_size, mean=data.mean, std=data.std,
        shuffle=True, augment=settings.augment, device=dev, seed=seed,
    )
    test_batches = Batches(data.test, batch_size=512, mean=data.mean, std=data.std, device=dev)
    start = _resume(checkpoint_path, identity, model, opt, sched, log_path)
    summary = {"diverged": False, "diverged_at": "", "epochs": settings.epochs, "resumed_from": start}
    for epoch in range(start, settings.epochs):
        t0 = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        try:
            train_loss, train_acc = train_epoch(model, opt, train_batches, seed, epoch, settings, progress)
        except TrainingError as err:
            if settings.on_divergence != "record":
                raise
            _record_divergence(err, checkpoint_path, model, log_path, epoch, lr, time.perf_counter() - t0)
            summary.update(diverged=True, diverged_at=str(err))
            break
        sched.step()
        test_loss, test_acc = evaluate(model, test_batches)
        row = dict(epoch=epoch + 1, lr=lr, train_loss=train_loss, train_acc=train_acc,
                   test_loss=test_loss, test_acc=test_acc, seconds=time.perf_counter() - t0, diverged=0)
        _append_log(log_path, row)
        log.info(
            "epoch %d/%d lr %.4g train loss %.4f acc %.4f | test loss %.4f acc %.4f (%.1fs)",
            epoch + 1, settings.epochs, lr, train_loss, train_acc, test_loss, test_acc, row["seconds"],
        )
        save_checkpoint(checkpoint_path, model, opt, sched, epoch + 1, identity)
    summary["test_loss"], summary["test_accuracy"] = evaluate(model, test_batches)
    summary["settings"] = asdict(settings)
    return summary


def _optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )


def train_epoch(model, opt, batches, seed, epoch, settings, progress=False) -> tuple[float, float]:
    """One epoch of training: draws the epoch's streams from (seed, epoch), steps `opt` per batch.

    Args:
        model: the model, on the batches' device.
        opt: its optimizer.
        batches: a shuffling `Batches` of the train split (set to `epoch` here).
        seed: the run's seed.
        epoch: 0-based epoch.
        settings: TrainSettings (for the epoch count in progress lines).
        progress: report progress per batch.

    Returns:
        (mean cross-entropy, accuracy) over the epoch's images. Raises TrainingError naming
        the first batch whose loss was not finite.
    """
    model.train()
    device = next(model.parameters()).device
    torch.manual_seed(stream_seed(seed, epoch, MODEL_STREAM))  # dropout: CPU and every CUDA generator
    batches.set_epoch(epoch)
    losses = torch.zeros(len(batches), device=device)  # summed loss per batch, on the device
    correct = torch.zeros((), dtype=torch.long, device=device)
    count = 0
    desc = f"epoch {epoch + 1}/{settings.epochs}"
    for i, (x, y) in enumerate(with_progress(batches, desc, enabled=progress, size=lambda b: len(b[1]))):
        with _autocast(device):
            logits = model(x)
            loss = nn.functional.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses[i] = loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        count += len(y)
    losses = losses.cpu()  # the epoch's one host sync
    bad = torch.nonzero(~torch.isfinite(losses)).flatten()
    if len(bad):
        first = int(bad[0])
        raise TrainingError(
            f"loss became {float(losses[first])} at epoch {epoch + 1}, batch {first + 1}, "
            f"learning rate {opt.param_groups[0]['lr']:g}; lower train.lr or set "
            "train.on_divergence: record to keep the other runs' figures"
        )
    return float(losses.double().sum()) / max(count, 1), int(correct) / max(count, 1)


def _record_divergence(err, checkpoint_path, model, log_path, epoch, lr, seconds) -> None:
    """Keep the run as diverged: the weights of its last finished epoch, a flagged log row."""
    log.error("%s; recording the run as diverged (weights of epoch %d kept)", err, epoch)
    state = torch.load(checkpoint_path, map_location=next(model.parameters()).device, weights_only=True)
    model.load_state_dict(state["model"])
    nan = float("nan")
    _append_log(log_path, dict(epoch=epoch + 1, lr=lr, train_loss=nan, train_acc=nan,
                               test_loss=nan, test_acc=nan, seconds=seconds, diverged=1))


def _append_log(path: str | Path, row: dict) -> None:
    path = Path(path)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def _resume(path, identity, model, opt, sched, log_path) -> int:
    """Load the checkpoint if it belongs to `identity`; returns the epoch to start from.

    A fresh start saves the epoch-0 state, so a divergence in the first epoch has weights to
    fall back on, and says why it did not resume in the log.
    """
    log_path = Path(log_path)
    state, reason = load_checkpoint(path, identity, next(model.parameters()).device)
    if state is None:
        log.info("started fresh (%s)", reason)
        log_path.unlink(missing_ok=True)
        save_checkpoint(path, model, opt, sched, 0, identity)
        return 0
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    _truncate_log(log_path, state["epoch"])
    log.info("resumed from epoch %d (%s)", state["epoch"], path)
    return state["epoch"]


def _truncate_log(log_path: Path, epochs: int) -> None:
    """Keep only the log rows of epochs the checkpoint contains."""
    if not log_path.exists():
        return
    with log_path.open() as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["epoch"]) <= epochs]
    log_path.unlink()
    for row in rows:
        _append_log(log_path, row)
