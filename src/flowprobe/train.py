"""Training a model of the zoo on an in-memory dataset, with per-epoch logs and checkpoints.

Schedule of the study (phd-lab): SGD, lr 0.1 multiplied by `lr_gamma` every `lr_step` epochs.
Every epoch ends with a checkpoint, so a killed job resumes from its last finished epoch and
reaches the same weights as an uninterrupted run (the batch order depends on seed and epoch
only, and the RNG states are saved with the checkpoint).
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from flowprobe.data import Batches, Dataset
from flowprobe.errors import TrainingError

log = logging.getLogger(__name__)

LOG_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds", "diverged"]


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    lr_step: int = 10
    lr_gamma: float = 0.1
    on_divergence: str = "stop"  # stop | record
    optimizer: str = "sgd"  # sgd | adam (the study trained its long-skip MLP with Adam)
    augment: bool = True  # random crop (4-px padding) + horizontal flip; off for digits


def resolve_device(device: str | None = "auto") -> torch.device:
    """`auto` picks CUDA when present, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _autocast(device: torch.device):
    # bf16 autocast only where it is fast and safe (CUDA); CPU stays float32 for determinism.
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def evaluate(model: nn.Module, batches) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `model` in eval mode over `batches`."""
    model.eval()
    device = next(model.parameters()).device
    loss_sum, correct, count = 0.0, 0, 0
    for x, y in batches:
        with _autocast(device):
            logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits.float(), y, reduction="sum").item()
        correct += (logits.argmax(1) == y).sum().item()
        count += len(y)
    return loss_sum / max(count, 1), correct / max(count, 1)


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
) -> dict:
    """Train `model` in place; returns a summary dict (test accuracy, diverged flag, epochs).

    `log_path` receives one CSV row per epoch; `checkpoint_path` holds the last finished
    epoch and is removed by the caller once the final model is written.
    """
    dev = resolve_device(device)
    model.to(dev)
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
    opt = _optimizer(model, settings)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=settings.lr_step, gamma=settings.lr_gamma)
    train_batches = Batches(
        data.train, batch_size=settings.batch_size, mean=data.mean, std=data.std,
        shuffle=True, augment=settings.augment, device=dev, seed=seed,
    )
    test_batches = Batches(data.test, batch_size=512, mean=data.mean, std=data.std, device=dev)
    start = _resume(checkpoint_path, model, opt, sched, log_path)
    summary = {"diverged": False, "diverged_at": "", "epochs": settings.epochs}
    for epoch in range(start, settings.epochs):
        t0 = time.perf_counter()
        train_batches.set_epoch(epoch)
        try:
            train_loss, train_acc = _train_epoch(model, opt, train_batches, epoch, settings, progress)
        except TrainingError as err:
            if settings.on_divergence != "record":
                raise
            log.error("%s; recording the run as diverged", err)
            summary.update(diverged=True, diverged_at=str(err))
            nan = float("nan")
            _append_log(log_path, dict(epoch=epoch + 1, lr=opt.param_groups[0]["lr"], train_loss=nan, train_acc=nan,
                                       test_loss=nan, test_acc=nan, seconds=time.perf_counter() - t0, diverged=1))
            break
        lr = opt.param_groups[0]["lr"]
        sched.step()
        test_loss, test_acc = evaluate(model, test_batches)
        row = dict(
            epoch=epoch + 1, lr=lr, train_loss=train_loss, train_acc=train_acc,
            test_loss=test_loss, test_acc=test_acc, seconds=time.perf_counter() - t0, diverged=0,
        )
        _append_log(log_path, row)
        log.info(
            "epoch %d/%d lr %.4g train loss %.4f acc %.4f | test loss %.4f acc %.4f (%.1fs)",
            epoch + 1, settings.epochs, lr, train_loss, train_acc, test_loss, test_acc, row["seconds"],
        )
        _save_checkpoint(checkpoint_path, model, opt, sched, epoch + 1)
    summary["test_loss"], summary["test_accuracy"] = evaluate(model, test_batches)
    summary["settings"] = asdict(settings)
    return summary


def _optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    if settings.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )


def _train_epoch(model, opt, batches, epoch, settings, progress) -> tuple[float, float]:
    model.train()
    device = next(model.parameters()).device
    loss_sum, correct, count = 0.0, 0, 0
    bar = tqdm(batches, desc=f"epoch {epoch + 1}/{settings.epochs}", disable=not progress, mininterval=5)
    for i, (x, y) in enumerate(bar):
        with _autocast(device):
            logits = model(x)
            loss = nn.functional.cross_entropy(logits.float(), y)
        if not math.isfinite(loss.item()):
            raise TrainingError(
                f"loss became {loss.item()} at epoch {epoch + 1}, batch {i + 1}, "
                f"learning rate {opt.param_groups[0]['lr']:g}; lower train.lr or set "
                "train.on_divergence: record to keep the other runs' figures"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        count += len(y)
    return loss_sum / max(count, 1), correct / max(count, 1)


def _append_log(path: str | Path, row: dict) -> None:
    path = Path(path)
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def _save_checkpoint(path, model, opt, sched, epoch: int) -> None:
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {"epoch": epoch, "model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()},
        tmp,
    )
    tmp.replace(path)  # atomic: a kill during save never leaves a torn checkpoint


def _resume(path, model, opt, sched, log_path) -> int:
    """Load the last checkpoint if there is one; returns the epoch to start from."""
    path, log_path = Path(path), Path(log_path)
    if not path.exists():
        log_path.unlink(missing_ok=True)
        return 0
    state = torch.load(path, map_location=next(model.parameters()).device, weights_only=True)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    _truncate_log(log_path, state["epoch"])
    log.info("resuming from %s after epoch %d", path, state["epoch"])
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
