"""Dumping per-probe-point activations to HDF5 (the data contract of docs/design.md §4).

Features are taken with `model.eval()`, without augmentation and with the same
preprocessing for both splits (the study's code dumped train features in train mode with
augmentation: we do not). Each batch is reduced (adaptive average pool to 4×4, flattened
C·4·4, as in the study) and written straight away, so memory is bounded by one batch.
The file is written under a temporary name and renamed when complete: an interrupted
dump never leaves an `activations.h5` that later stages would trust.

With `prebn=True` the dump also stores, for every probe point whose unit has a conv or
linear layer before the tap, that layer's raw output (before BN and the nonlinearity),
resized to 4×4 by nearest neighbour (torch `interpolate(mode='nearest')`): the maps the
study's saturation was computed on. `dtype='float16'` halves the feature matrices; the
logits stay float32 and every reader upcasts before arithmetic (flowprobe.h5io).
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
from flowprobe.config import DEFAULTS
from flowprobe.errors import FlowprobeError
from flowprobe.logs import with_progress
from flowprobe.models import probe_points, receptive_fields
from flowprobe.models.base import Tap, taps
from flowprobe.devices import resolve_device

REDUCTIONS = ("avgpool4", "none")
_D = DEFAULTS["activations"]  # the one place of the dump defaults
DTYPES = {"float32": np.float32, "float16": np.float16}
FLOAT16_MAX = float(np.finfo(np.float16).max)
# Compressed matrices are chunked by whole rows, about this many bytes a chunk: large enough
# for cheap streaming reads, small enough to stay in h5py's 1 MiB per-dataset chunk cache
# while the batches of a chunk are written. Uncompressed matrices stay contiguous: on the
# real dump, row chunks alone saved nothing and made random-row reads (minibatch CKA) ~7x
# slower (benchmarks/bench_storage.py).
CHUNK_BYTES = 512 * 1024
COMPRESSIONS = (None, "gzip", "lzf")


def reduce_map(x: torch.Tensor, reduction: str = "avgpool4") -> torch.Tensor:
    """[B, C, H, W] → [B, C·4·4] by adaptive average pooling (vectors pass through)."""
    if x.dim() == 2 or reduction == "none":
        return x.flatten(1)
    return nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)


def nearest4(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] → [B, C·4·4] resized by nearest neighbour (the study's saturation input);
    vectors [B, D] pass through."""
    if x.dim() == 2:
        return x
    return nn.functional.interpolate(x, size=(4, 4), mode="nearest").flatten(1)


def stored_shape(shape: tuple[int, ...], reduction: str) -> tuple[int, ...]:
    if len(shape) == 1 or reduction == "none":
        return tuple(shape)
    return (shape[0], 4, 4)


def prebn_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Probe point name → the conv/linear layer of the unit the point ends: the last
    Conv2d/Linear registered before the Tap among the direct children of the module holding
    it, with no other Tap in between (units register their layers in forward order).

    Conv/linear units get their conv or fc; a ResNet block's `branch` point its second conv
    (before BN and the add); a DenseNet layer's `new` point its 3x3 conv. Merges (adds and
    concatenations) have no layer of their own and get none.
    """
    found = {}
    for parent in model.modules():
        last = None
        for child in parent.children():
            if isinstance(child, Tap):
                if last is not None:
                    found[child.point.name] = last
                last = None
            elif isinstance(child, (nn.Conv2d, nn.Linear)):
                last = child
    return found


def prebn_shape(module: nn.Module) -> tuple[int, ...]:
    """Stored shape of a pre-BN output: (C, 4, 4) for a conv, (D,) for a linear layer."""
    if isinstance(module, nn.Conv2d):
        return (module.out_channels, 4, 4)
    return (module.out_features,)


def bytes_per_image(model: nn.Module, num_classes: int, reduction: str = "avgpool4",
                    dtype: str = "float32", prebn: bool = False) -> int:
    """Bytes one image adds to activations.h5 (before any compression): every probe point's
    stored features (C·4·4 per conv point with avgpool4, D per vector) and, with `prebn`,
    every pre-BN output (C·4·4 or D), in `dtype`; plus float32 logits and int64 label and index.

    Args:
        model: the network (its probe points are traced at its input size).
        num_classes: width of the logits.
        reduction: activations.reduction.
        dtype: activations.dtype, 'float32' or 'float16'.
        prebn: whether pre-BN outputs are stored.
    Returns:
        bytes per image.
    """
    values = sum(int(np.prod(stored_shape(p.shape, reduction))) for p in probe_points(model))
    if prebn:
        values += sum(int(np.prod(prebn_shape(m))) for m in prebn_modules(model).values())
    return values * np.dtype(DTYPES[dtype]).itemsize + 4 * num_classes + 2 * 8


def estimate_bytes(model: nn.Module, data: Dataset, reduction: str, dtype: str = "float32",
                   prebn: bool = False) -> int:
    """Size of what the dump of `data` will write (flowprobe.activations.bytes_per_image × images)."""
    n = len(data.train.labels) + len(data.test.labels)
    return n * bytes_per_image(model, len(data.classes), reduction, dtype, prebn)


def dump_activations(
    model: nn.Module,
    data: Dataset,
    path: str | Path,
    *,
    attrs: dict,
    reduction: str = _D["reduction"],
    dtype: str = _D["dtype"],
    prebn: bool = False,
    compression: str | None = _D["compression"],
    batch_size: int = _D["batch_size"],
    device: str | None = "auto",
    progress: bool = True,
) -> None:
    """Write `path` (activations.h5) for both splits of `data`.

    Args:
        attrs: run config, dataset, resolution, seed, test_accuracy; become root attributes.
        reduction: 'avgpool4' (adaptive average pool to 4×4) or 'none'.
        dtype: 'float32' or 'float16' for the feature matrices (logits stay float32); the
            default is the config's (float16: probe accuracy within 0.03 points, half the disk).
        prebn: also store /prebn/{point}/{split}, the pre-BN unit outputs resized to 4×4.
        compression: None, 'gzip' or 'lzf' (with byte shuffle) for the feature matrices.
    """
    _check_options(reduction, dtype, compression)
    path = Path(path)
    _check_disk(path, estimate_bytes(model, data, reduction, dtype, prebn))
    points = probe_points(model)
    pre = prebn_modules(model) if prebn else {}
    rf = receptive_fields(model, getattr(model, "input_size", data.train.images.shape[-1])).set_index("probe_point")
    tmp = path.with_name(path.name + ".incomplete")
    dev = resolve_device(device)
    model.to(dev).eval()
    layout = {"dtype": DTYPES[dtype], "compression": compression}
    with h5py.File(tmp, "w") as h5:
        h5.attrs["complete"] = False
        for p in points:
            group = h5.create_group(f"layers/{p.name}")
            for key, value in p.attrs().items():
                group.attrs[key] = value
            group.attrs["border_layer"] = bool(rf.loc[p.name, "border_layer"])
            group.attrs["stored_shape"] = list(stored_shape(p.shape, reduction))
            group.attrs["reduction"] = reduction
        for name, module in pre.items():
            group = h5.create_group(f"prebn/{name}")
            group.attrs["stored_shape"] = list(prebn_shape(module))
            group.attrs["reduction"] = "nearest4" if isinstance(module, nn.Conv2d) else "none"
            group.attrs["module"] = type(module).__name__
        for split in ("train", "test"):
            _dump_split(h5, model, data, split, points, pre, reduction, layout, batch_size, dev, progress)
        h5.attrs["probe_points"] = json.dumps([p.name for p in points])
        h5.attrs["prebn_points"] = json.dumps([p.name for p in points if p.name in pre])
        h5.attrs["prebn"] = bool(prebn)
        h5.attrs["dtype"] = dtype
        h5.attrs["code_version"] = flowprobe.__version__
        h5.attrs["dataset"] = data.name
        h5.attrs["classes"] = json.dumps(list(data.classes))
        for key, value in attrs.items():
            h5.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
        h5.attrs["complete"] = True
    tmp.replace(path)


def _check_options(reduction: str, dtype: str, compression: str | None) -> None:
    if reduction not in REDUCTIONS:
        raise FlowprobeError(f"activations.reduction '{reduction}' is unknown; allowed: {', '.join(REDUCTIONS)}")
    if dtype not in DTYPES:
        raise FlowprobeError(f"activations.dtype '{dtype}' is unknown; allowed: {', '.join(DTYPES)}")
    if compression not in COMPRESSIONS:
        raise FlowprobeError(f"activations.compression '{compression}' is unknown; allowed: none, gzip, lzf")


def _matrix(h5: h5py.File, name: str, n: int, width: int, layout: dict) -> h5py.Dataset:
    """An [n, width] feature matrix: contiguous, or compressed in chunks of whole rows
    (about CHUNK_BYTES a chunk) with byte shuffle."""
    if not layout["compression"]:
        return h5.create_dataset(name, shape=(n, width), dtype=layout["dtype"])
    rows = max(1, min(n, CHUNK_BYTES // (width * np.dtype(layout["dtype"]).itemsize)))
    options = {"compression": layout["compression"], "shuffle": True, "chunks": (rows, width)}
    if layout["compression"] == "gzip":
        options["compression_opts"] = 1  # level 1: most of gzip's gain at a fraction of its time
    return h5.create_dataset(name, shape=(n, width), dtype=layout["dtype"], **options)


@torch.no_grad()
def _dump_split(h5, model, data, split, points, pre, reduction, layout, batch_size, device, progress):
    images = getattr(data, split)
    n = len(images.labels)
    h5[f"labels/{split}"] = images.labels.numpy().astype(np.int64)
    h5[f"indices/{split}"] = images.indices.numpy().astype(np.int64)
    sets = {
        ("layers", p.name): _matrix(h5, f"layers/{p.name}/{split}", n, int(np.prod(stored_shape(p.shape, reduction))), layout)
        for p in points
    }
    for name, module in pre.items():
        sets[("prebn", name)] = _matrix(h5, f"prebn/{name}/{split}", n, int(np.prod(prebn_shape(module))), layout)
    logits_set = h5.create_dataset(f"output/{split}", shape=(n, len(data.classes)), dtype="f4")
    captured: dict[tuple[str, str], torch.Tensor] = {}
    handles = [
        t.register_forward_hook(
            lambda m, i, o: captured.__setitem__(("layers", m.point.name), reduce_map(o.float(), reduction))
        )
        for t in taps(model)
    ]
    handles += [module.register_forward_hook(_prebn_hook(name, captured)) for name, module in pre.items()]
    batches = Batches(images, batch_size=batch_size, mean=data.mean, std=data.std, device=device)
    start = 0
    try:
        for x, _ in with_progress(batches, f"dump {split}", enabled=progress, size=lambda b: len(b[0])):
            logits = model(x)
            stop = start + len(x)
            for key, dataset in sets.items():
                dataset[start:stop] = _as_stored(captured[key], layout["dtype"], key)
            logits_set[start:stop] = logits.float().cpu().numpy()
            start = stop
    finally:
        for h in handles:
            h.remove()


def _prebn_hook(name: str, captured: dict):
    def hook(module, inputs, output):
        captured[("prebn", name)] = nearest4(output.float())

    return hook


def _as_stored(x: torch.Tensor, dtype, key: tuple[str, str]) -> np.ndarray:
    """The batch as `dtype`; float16 must not turn a finite value into inf."""
    x = x.cpu().numpy()
    if dtype == np.float16 and np.abs(x).max(initial=0.0) > FLOAT16_MAX:
        raise FlowprobeError(
            f"/{key[0]}/{key[1]}: a value of magnitude {np.abs(x).max():.3g} exceeds float16's "
            f"{FLOAT16_MAX:.0f}; set activations.dtype: float32"
        )
    return x.astype(dtype, copy=False)


def _check_disk(path: Path, needed: int) -> None:
    """Fail before writing anything when the disk cannot hold the dump (with 10% slack)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path.parent).free
    if needed * 1.1 > free:
        raise FlowprobeError(
            f"activations dump needs about {needed / 1e9:.2f} GB but {path.parent} has "
            f"{free / 1e9:.2f} GB free; free space, set activations.dtype: float16 or lower "
            "activations.max_per_class"
        )
