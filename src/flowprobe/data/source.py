"""The common shape of a data source: labels up front, pixels read on demand.

Reading labels before pixels lets `max_per_class` pick its subset before any JPEG is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from flowprobe.data.pixels import decode_images, resize_square, shorter_side
from flowprobe.errors import DataError

# (indices into the split, square side) -> uint8 [n, C, side, side]
Reader = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass
class RawSplit:
    labels: torch.Tensor  # int64 [N], the whole split in source order
    read: Reader
    native: int  # shorter side of the split's images; the default resolution


@dataclass
class Source:
    classes: list[str]
    train: RawSplit
    test: RawSplit


def tensor_split(images: torch.Tensor, labels: torch.Tensor) -> RawSplit:
    """A split already decoded to uint8 [N, C, H, W] (CIFAR-10, MNIST)."""

    def read(indices: torch.Tensor, size: int) -> torch.Tensor:
        return resize_square(images[indices], size)

    return RawSplit(labels=labels.long(), read=read, native=min(images.shape[-2:]))


def image_split(items: Sequence, labels: Sequence[int], open_image, describe=str) -> RawSplit:
    """A split of encoded images (paths or bytes) decoded on `read`; native size from the
    first image's header (ImageNette 160px/320px are 160/320 on the shorter side)."""

    def read(indices: torch.Tensor, size: int) -> torch.Tensor:
        return decode_images([items[i] for i in indices.tolist()], open_image, size, describe)

    native = shorter_side(open_image, items[0], describe)
    return RawSplit(labels=torch.as_tensor(list(labels), dtype=torch.int64), read=read, native=native)


def fetch_if_missing(present: bool, download: bool, fetch: Callable[[], object], missing: str) -> None:
    """Run torchvision's download (`fetch`) when the files are absent and download is on.

    `missing` says which archive goes in which folder; it is the whole message when download
    is off, and the fix when the download fails (typically: offline)."""
    if present:
        return
    if not download:
        raise DataError(f"{missing}; or set `download: true` to fetch it when online")
    try:
        fetch()
    except (OSError, RuntimeError, EOFError, ValueError) as err:  # URLError is an OSError
        raise DataError(f"download failed ({err}). Offline? {missing}") from err


def require_folder(folder: Path, what: str) -> None:
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found; {what}")
