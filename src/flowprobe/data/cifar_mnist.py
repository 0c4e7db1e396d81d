"""CIFAR-10 and MNIST through the real torchvision classes, with errors a user can act on."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torchvision.datasets as tvd
from torchvision.datasets import mnist as tv_mnist

from flowprobe.data.source import Source, fetch_if_missing, tensor_split
from flowprobe.errors import DataError

# What a damaged pickle or idx file can raise inside torchvision's readers.
UNREADABLE = (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError,
              AttributeError, ImportError, AssertionError, RuntimeError)


class CIFAR10Files(tvd.CIFAR10):
    """torchvision's CIFAR10 with its per-file md5 check reduced to an existence check.

    Why: the hard-coded md5 list pins the exact upstream batch files, so no fabricated test
    batches (tests/conftest.py) and no re-pickled copy could ever load. Nothing is lost for
    real data: torchvision md5-checks the archive before extracting it, and a truncated or
    corrupt batch still fails inside the real unpickling code, which we report with its path.
    """

    train_list = [[name, None] for name, _ in tvd.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in tvd.CIFAR10.test_list]
    meta = {**tvd.CIFAR10.meta, "md5": None}


def cifar10(root: Path, download: bool) -> Source:
    """CIFAR-10 (Krizhevsky 2009) from root/cifar-10-batches-py, uint8 32×32 RGB."""
    folder = root / CIFAR10Files.base_folder
    names = [name for name, _ in CIFAR10Files.train_list + CIFAR10Files.test_list]
    files = [folder / name for name in names + [CIFAR10Files.meta["filename"]]]
    fetch_if_missing(
        all(f.is_file() for f in files),
        download,
        lambda: CIFAR10Files(root, train=False, download=True),
        f"CIFAR-10 not found in {folder}: extract {CIFAR10Files.filename} ({CIFAR10Files.url}) into {root}",
    )
    splits, classes = [], []
    for train in (True, False):
        try:
            data = CIFAR10Files(root, train=train, download=False)
        except UNREADABLE as err:
            raise DataError(
                f"{_first_unreadable_pickle(files) or folder}: corrupt or truncated CIFAR-10 file ({err!r}); "
                f"delete {folder} and extract {CIFAR10Files.filename} again (or set `download: true`)"
            ) from err
        images = torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous()
        splits.append(tensor_split(images, torch.as_tensor(data.targets)))
        classes = list(data.classes)
    return Source(classes=classes, train=splits[0], test=splits[1])


def _first_unreadable_pickle(files: list[Path]) -> Path | None:
    for path in files:
        try:
            with open(path, "rb") as f:
                pickle.load(f, encoding="latin1")
        except UNREADABLE:
            return path
    return None


def mnist(root: Path, download: bool) -> Source:
    """MNIST (LeCun et al. 1998) from the idx files in root/MNIST/raw, uint8 28×28 gray."""
    raw = root / "MNIST" / "raw"  # MNIST.raw_folder; torchvision reads the unzipped idx files
    archives = [name for name, _ in tvd.MNIST.resources]
    files = [raw / name.removesuffix(".gz") for name in archives]
    fetch_if_missing(
        all(f.is_file() for f in files),
        download,
        lambda: tvd.MNIST(root, train=True, download=True),
        f"MNIST not found in {raw}: put {', '.join(archives)} there and gunzip them",
    )
    splits = []
    for train, prefix in ((True, "train"), (False, "t10k")):
        try:
            data = tvd.MNIST(root, train=train, download=False)
        except UNREADABLE as err:
            culprit = _first_unreadable_idx(raw, prefix) or raw
            raise DataError(
                f"{culprit}: corrupt or truncated MNIST file ({err!r}); delete it and put the original "
                f"{culprit.name if culprit != raw else 'files'}.gz in {raw} (then gunzip, or set `download: true`)"
            ) from err
        if len(data.data) != len(data.targets):
            raise DataError(
                f"{raw}: {prefix} images ({len(data.data)}) and labels ({len(data.targets)}) differ in count; "
                "replace both idx files with the originals"
            )
        splits.append(tensor_split(data.data.unsqueeze(1).contiguous(), data.targets))
    return Source(classes=list(tvd.MNIST.classes), train=splits[0], test=splits[1])


def _first_unreadable_idx(raw: Path, prefix: str) -> Path | None:
    for path, reader in ((raw / f"{prefix}-images-idx3-ubyte", tv_mnist.read_image_file),
                         (raw / f"{prefix}-labels-idx1-ubyte", tv_mnist.read_label_file)):
        try:
            reader(str(path))
        except UNREADABLE:
            return path
    return None
