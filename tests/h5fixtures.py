"""Write a small activations.h5 that honours the data contract (docs/design.md §4, flowprobe.h5io).

Features carry label information that grows with depth: a layer's samples are
    signal * class_code[y] @ mix + latent @ mix_latent + noise
with signal rising along the `layers` list, so probe accuracy rises with depth and the
covariance has a few strong directions (saturation < 1). Maps (C, 4, 4) are written
flattened C-major, as the activations stage stores adaptive-avg-pooled maps; every
spatial position of an image shares its channel code, plus per-position noise.

`prebn` names layers that also get a /prebn map (as a dump with prebn=True writes):
isotropic Gaussian noise, so its saturation is near 1, unlike the layer's. `dtype` is the storage type of the feature matrices (float32 or float16).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

SPLITS = ("train", "test")


def write_activations(
    path,
    n_train: int,
    n_test: int,
    layers: list[tuple],
    num_classes: int = 4,
    seed: int = 0,
    prebn: tuple[str, ...] = (),
    dtype: str = "float32",
) -> Path:
    """layers: [(name, pathway, stage, block, position, stored_shape)], stored_shape (C, 4, 4)
    or (D,); written in list order, which is the probe-point (forward) order."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    labels = {s: np.arange(n) % num_classes for s, n in zip(SPLITS, (n_train, n_test))}
    labels = {s: rng.permutation(y).astype(np.int64) for s, y in labels.items()}
    with h5py.File(path, "w") as h5:
        for split, y in labels.items():
            h5[f"labels/{split}"] = y
            h5[f"indices/{split}"] = np.arange(len(y), dtype=np.int64)
            logits = 3.0 * np.eye(num_classes)[y] + rng.normal(size=(len(y), num_classes))
            h5[f"output/{split}"] = logits.astype(np.float32)
        for depth, layer in enumerate(layers):
            _write_layer(h5, layer, depth, labels, num_classes, rng, dtype)
            if layer[0] in prebn:
                _write_prebn(h5, layer, labels, rng, dtype)
        test_pred = h5["output/test"][...].argmax(1)
        h5.attrs.update(
            probe_points=json.dumps([layer[0] for layer in layers]),
            resolution=32,
            test_accuracy=float(np.mean(test_pred == labels["test"])),
            seed=seed,
            complete=True,
            dataset="synthetic",
            code_version="test",
            config=json.dumps({"model": "synthetic", "dataset": "synthetic", "seed": seed}),
            prebn=bool(prebn),
            prebn_points=json.dumps([layer[0] for layer in layers if layer[0] in prebn]),
            dtype=dtype,
        )
    return path


def _write_prebn(h5, layer: tuple, labels: dict, rng, dtype: str) -> None:
    name, stored_shape = layer[0], layer[5]
    width, positions = stored_shape[0], int(np.prod(stored_shape[1:], dtype=int))
    group = h5.create_group(f"prebn/{name}")
    for split, y in labels.items():
        group[split] = rng.normal(size=(len(y), width, positions)).reshape(len(y), -1).astype(dtype)
    group.attrs.update(stored_shape=list(stored_shape), reduction="nearest4" if len(stored_shape) == 3 else "none")


def _write_layer(h5, layer: tuple, depth: int, labels: dict, num_classes: int, rng, dtype: str) -> None:
    name, pathway, stage, block, position, stored_shape = layer
    width, positions = stored_shape[0], int(np.prod(stored_shape[1:], dtype=int))
    class_code = rng.normal(size=(num_classes, width))
    mix_latent = rng.normal(size=(3, width))
    signal = 0.5 + depth
    group = h5.create_group(f"layers/{name}")
    for split, y in labels.items():
        code = signal * class_code[y] + rng.normal(size=(len(y), 3)) @ mix_latent  # [N, C]
        maps = code[:, :, None] + 0.3 * rng.normal(size=(len(y), width, positions))  # [N, C, H*W]
        group[split] = maps.reshape(len(y), -1).astype(dtype)
    kind = "conv" if len(stored_shape) == 3 else "linear"
    group.attrs.update(
        stage=stage,
        block=block,
        pathway=pathway,
        position=position,
        kind=kind,
        receptive_field=3 + 2 * depth,
        input_receptive_field=1 + 2 * depth,
        border_layer=False,
        shape=list(stored_shape) if kind == "linear" else [width, 8, 8],
        stored_shape=list(stored_shape),
        reduction="avgpool4" if kind == "conv" else "none",  # what flowprobe.activations writes
    )
