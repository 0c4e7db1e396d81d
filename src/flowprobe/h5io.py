"""Reading activations.h5 (the data contract of docs/design.md §4).

Layout: /labels/{split}, /indices/{split}, /layers/{probe_point}/{split} [N, D] with the
probe point's metadata as attrs, /output/{split} [N, classes]; root attrs hold the run
config (JSON), dataset, resolution, test accuracy, seed, code version and the ordered
list of probe points. Every analysis reads probe points from here, never from the model.

Optional: /prebn/{probe_point}/{split} [N, C·4·4 or D], the pre-BN output of the unit's
conv/linear layer resized by nearest neighbour to 4×4 (root attrs `prebn`, `prebn_points`).
Feature matrices may be stored as float16 (root attr `dtype`); every reader here returns
float32, so no analysis does arithmetic in float16.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from flowprobe.errors import ActivationFileError
from flowprobe.models.base import POINT_COLUMNS

SPLITS = ("train", "test")
REQUIRED_ROOT_ATTRS = ("probe_points", "resolution", "test_accuracy", "seed", "complete")


def open_activations(path: str | Path) -> h5py.File:
    """Open an activations file read-only and check it honours the contract."""
    path = Path(path)
    try:
        h5 = h5py.File(path, "r")
    except (OSError, FileNotFoundError) as err:
        raise ActivationFileError(
            f"{path}: cannot be read as HDF5 ({err}); delete it and rerun the activations rule"
        ) from None
    try:
        _check_contract(h5, path)
    except ActivationFileError:
        h5.close()
        raise
    return h5


def _check_contract(h5: h5py.File, path: Path) -> None:
    for attr in REQUIRED_ROOT_ATTRS:
        if attr not in h5.attrs:
            raise ActivationFileError(
                f"{path}: root attribute '{attr}' is missing (incomplete or foreign file); "
                "delete it and rerun the activations rule"
            )
    if not bool(h5.attrs["complete"]):
        raise ActivationFileError(f"{path}: the dump was interrupted (complete=False); rerun it")
    required = [f"labels/{s}" for s in SPLITS] + [f"output/{s}" for s in SPLITS]
    required += [f"layers/{p}/{s}" for p in probe_point_names(h5) for s in SPLITS]
    required += [f"prebn/{p}/{s}" for p in prebn_point_names(h5) for s in SPLITS]
    for name in required:
        if name not in h5:
            raise ActivationFileError(
                f"{path}: dataset '/{name}' is missing; delete the file and rerun the activations rule"
            )


def probe_point_names(h5: h5py.File) -> list[str]:
    """Probe point names in forward order."""
    return list(json.loads(h5.attrs["probe_points"]))


def has_prebn(h5: h5py.File) -> bool:
    """Whether the dump stored pre-BN outputs (activations with prebn=True)."""
    return bool(h5.attrs.get("prebn", False))


def prebn_point_names(h5: h5py.File) -> list[str]:
    """Probe points with a stored pre-BN output, in forward order ([] when none were stored)."""
    return list(json.loads(h5.attrs.get("prebn_points", "[]")))


def point_frame(h5: h5py.File) -> pd.DataFrame:
    """One row per probe point with the metadata columns every analysis table carries."""
    rows = []
    for name in probe_point_names(h5):
        attrs = h5[f"layers/{name}"].attrs
        row = {"probe_point": name}
        row.update({c: _plain(attrs[c]) for c in POINT_COLUMNS[1:]})
        rows.append(row)
    return pd.DataFrame(rows, columns=POINT_COLUMNS)


def layer_shape(h5: h5py.File, name: str, group: str = "layers") -> tuple[int, ...]:
    """(C, H, W) of the reduced feature map stored for `name` in `group` ('layers' or
    'prebn'), or (D,) for vectors."""
    return tuple(int(v) for v in h5[f"{group}/{name}"].attrs["stored_shape"])


def features(h5: h5py.File, name: str, split: str, group: str = "layers") -> np.ndarray:
    """[N, D] features of one probe point as float32 (float16 storage is upcast)."""
    return as_float32(h5[f"{group}/{name}/{split}"][...])


def feature_rows(h5: h5py.File, name: str, split: str, rows, group: str = "layers") -> np.ndarray:
    """Rows `rows` (a slice or increasing indices) of one probe point's features, as float32."""
    return as_float32(h5[f"{group}/{name}/{split}"][rows])


def n_rows(h5: h5py.File, split: str) -> int:
    """Number of images stored for `split`."""
    return int(h5[f"labels/{split}"].shape[0])


def as_float32(x: np.ndarray) -> np.ndarray:
    """float16 (or float32) storage as float32: readers never compute in float16."""
    return x.astype(np.float32, copy=False)


def labels(h5: h5py.File, split: str) -> np.ndarray:
    return h5[f"labels/{split}"][...].astype(np.int64)


def outputs(h5: h5py.File, split: str) -> np.ndarray:
    return as_float32(h5[f"output/{split}"][...])


def _plain(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
