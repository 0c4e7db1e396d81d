"""A training run's checkpoint: the state after its last finished epoch, for one setting only.

The file holds the model, optimizer and scheduler states, the number of finished epochs and
the *identity* of the training: everything that shapes the weights (model architecture and the
caller's spec and options, the data's content, every train setting, the seed, the trainer's
code) and its fingerprint. A checkpoint of another identity is never resumed: it is moved
aside to `<name>.stale.pt` and training starts fresh, with one log line saying why.

Random streams need no generator state in the file: training derives every generator (batch
order and augmentation, dropout) at the start of each epoch from (seed, epoch) through
`flowprobe.data.loader.stream_seed`, so the seed (in the identity) and the epoch count are the
streams' whole state, on any device.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import nn

from flowprobe.data import Dataset
from flowprobe.fingerprint import canonical, differences, fingerprint

PACKAGE = Path(__file__).resolve().parent
# Source files whose code decides the weights a setting produces (the trainer's code version).
TRAINER_SOURCES = ("train.py", "checkpoint.py", "data/loader.py", "models/*.py")


def trainer_code() -> str:
    """16 hex digits of SHA-256 over the trainer's source files (TRAINER_SOURCES)."""
    digest = hashlib.sha256()
    for pattern in TRAINER_SOURCES:
        for path in sorted(PACKAGE.glob(pattern)):
            digest.update(path.relative_to(PACKAGE).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def data_digest(data: Dataset) -> str:
    """16 hex digits of BLAKE2b over the pixels and labels of both splits, classes and stats."""
    digest = hashlib.blake2b(digest_size=8)
    for split in (data.train, data.test):
        for tensor in (split.images, split.labels):
            digest.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
            digest.update(tensor.detach().cpu().contiguous().numpy())
    digest.update(json.dumps([data.classes, list(data.mean), list(data.std)]).encode())
    return digest.hexdigest()


def training_identity(model: nn.Module, data: Dataset, settings: dict, seed: int, model_spec: dict | None) -> dict:
    """What shapes the weights of a training run (see the module docstring).

    Args:
        model: the freshly built model (its `repr` names every layer and width).
        data: the dataset it trains on.
        settings: every train setting (dataclasses.asdict of TrainSettings).
        seed: the run's seed (initial weights and every random stream).
        model_spec: what the caller built the model from (e.g. spec and options), or None.

    Returns:
        A JSON-able dict of plain values.
    """
    architecture = hashlib.sha256(repr(model).encode()).hexdigest()[:16]
    return canonical({
        "model": {"architecture": architecture, **(model_spec or {})},
        "data": {"name": data.name, "content": data_digest(data)},
        "train": settings,
        "seed": seed,
        "trainer_code": trainer_code(),
    })


def save_checkpoint(path: str | Path, model, opt, sched, epoch: int, identity: dict) -> None:
    """Write the state after `epoch` finished epochs atomically (temp file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    state = {
        "epoch": epoch, "model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
        "identity": json.dumps(identity), "fingerprint": fingerprint(identity),
    }
    torch.save(state, tmp)
    tmp.replace(path)  # a kill during the save never leaves a torn checkpoint


def load_checkpoint(path: str | Path, identity: dict, device) -> tuple[dict | None, str]:
    """The checkpoint's state if it belongs to `identity`, else (None, why training starts fresh).

    A checkpoint of another identity, or one that cannot be read, is moved aside to
    `<stem>.stale.pt` (replacing an older one), so it is kept for inspection but never resumed.
    """
    path = Path(path)
    if not path.exists():
        return None, "no checkpoint"
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # any unreadable file is stale, whatever torch raises for it
        return None, _move_aside(path, f"checkpoint unreadable ({type(err).__name__}: {err})")
    if not isinstance(state, dict) or "identity" not in state:
        return None, _move_aside(path, "checkpoint without a fingerprint (older flowprobe)")
    old = json.loads(state["identity"])
    if state.get("fingerprint") == fingerprint(identity):
        return state, ""
    changed = differences(old, identity)
    return None, _move_aside(path, "checkpoint of other settings: " + "; ".join(changed or ["fingerprint differs"]))


def _move_aside(path: Path, reason: str) -> str:
    stale = path.with_name(f"{path.stem}.stale{path.suffix}")
    path.replace(stale)
    return f"{reason}; moved it to {stale.name}"
