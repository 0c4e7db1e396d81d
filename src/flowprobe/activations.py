"""Dumping per-probe-point activations to HDF5 (the data contract of DESIGN.md §4).

Features are taken with `model.eval()`, without augmentation and with the same
preprocessing for both splits (the study's code dumped train features in train mode with
augmentation: we do not). Each batch is reduced (adaptive average pool to 4×4, flattened
C·4·4, as in the study) and written straight away, so memory is bounded by one batch.
The file is written under a temporary name and renamed when complete: an interrupted
dump never leaves an `activations.h5` that later stages would trust.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

import flowprobe
from flowprobe.data import Batches, Dataset
from flowprobe.errors import FlowprobeError
from flowprobe.logs import with_progress
from flowprobe.models import probe_points, receptive_fields
from flowprobe.models.base import taps
from flowprobe.train import resolve_device

REDUCTIONS = ("avgpool4", "none")


def reduce_map(x: torch.Tensor, reduction: str = "avgpool4") -> torch.Tensor:
    """[B, C, H, W] → [B, C·4·4] by adaptive average pooling (vectors pass through)."""
    if x.dim() == 2 or reduction == "none":
        return x.flatten(1)
    return nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)


def stored_shape(shape: tuple[int, ...], reduction: str) -> tuple[int, ...]:
    if len(shape) == 1 or reduction == "none":
        return tuple(shape)
    return (shape[0], 4, 4)


def estimate_bytes(model: nn.Module, data: Dataset, reduction: str) -> int:
    """Size of the float32 feature matrices the dump will write."""
    n = len(data.train.labels) + len(data.test.labels)
    per_sample = sum(int(np.prod(stored_shape(p.shape, reduction))) for p in probe_points(model))
    return 4 * n * (per_sample + len(data.classes))


def dump_activations(
    model: nn.Module,
    data: Dataset,
    path: str | Path,
    *,
    attrs: dict,
    reduction: str = "avgpool4",
    batch_size: int = 256,
    device: str | None = "auto",
    progress: bool = True,
) -> None:
    """Write `path` (activations.h5) for both splits of `data`.

    `attrs` (run config, dataset, resolution, seed, test_accuracy) become root attributes.
    """
    if reduction not in REDUCTIONS:
        raise FlowprobeError(f"activations.reduction '{reduction}' is unknown; allowed: {', '.join(REDUCTIONS)}")
    path = Path(path)
    _check_disk(path, estimate_bytes(model, data, reduction))
    points = probe_points(model)
    rf = receptive_fields(model, getattr(model, "input_size", data.train.images.shape[-1])).set_index("probe_point")
    tmp = path.with_name(path.name + ".incomplete")
    dev = resolve_device(device)
    model.to(dev).eval()
    with h5py.File(tmp, "w") as h5:
        h5.attrs["complete"] = False
        for p in points:
            group = h5.create_group(f"layers/{p.name}")
            for key, value in p.attrs().items():
                group.attrs[key] = value
            group.attrs["border_layer"] = bool(rf.loc[p.name, "border_layer"])
            group.attrs["stored_shape"] = list(stored_shape(p.shape, reduction))
            group.attrs["reduction"] = reduction
        for split in ("train", "test"):
            _dump_split(h5, model, data, split, points, reduction, batch_size, dev, progress)
        h5.attrs["probe_points"] = json.dumps([p.name for p in points])
        h5.attrs["code_version"] = flowprobe.__version__
        h5.attrs["dataset"] = data.name
        h5.attrs["classes"] = json.dumps(list(data.classes))
        for key, value in attrs.items():
            h5.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
        h5.attrs["complete"] = True
    tmp.replace(path)


@torch.no_grad()
def _dump_split(h5, model, data, split, points, reduction, batch_size, device, progress):
    images = getattr(data, split)
    n = len(images.labels)
    h5[f"labels/{split}"] = images.labels.numpy().astype(np.int64)
    h5[f"indices/{split}"] = images.indices.numpy().astype(np.int64)
    sets = {
        p.name: h5.create_dataset(
            f"layers/{p.name}/{split}", shape=(n, int(np.prod(stored_shape(p.shape, reduction)))), dtype="f4"
        )
        for p in points
    }
    logits_set = h5.create_dataset(f"output/{split}", shape=(n, len(data.classes)), dtype="f4")
    captured: dict[str, torch.Tensor] = {}
    handles = [
        t.register_forward_hook(lambda m, i, o: captured.__setitem__(m.point.name, reduce_map(o.float(), reduction)))
        for t in taps(model)
    ]
    batches = Batches(images, batch_size=batch_size, mean=data.mean, std=data.std, device=device)
    start = 0
    try:
        for x, _ in with_progress(batches, f"dump {split}", enabled=progress, size=lambda b: len(b[0])):
            logits = model(x)
            stop = start + len(x)
            for name, dataset in sets.items():
                dataset[start:stop] = captured[name].cpu().numpy()
            logits_set[start:stop] = logits.float().cpu().numpy()
            start = stop
    finally:
        for h in handles:
            h.remove()


def _check_disk(path: Path, needed: int) -> None:
    """Fail before writing anything when the disk cannot hold the dump (with 10% slack)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path.parent).free
    if needed * 1.1 > free:
        raise FlowprobeError(
            f"activations dump needs about {needed / 1e9:.2f} GB but {path.parent} has "
            f"{free / 1e9:.2f} GB free; free space or lower activations.max_samples"
        )
