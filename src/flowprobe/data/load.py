"""`load_dataset`: any supported data set as in-memory uint8 tensors (docs/design.md §2b)."""

from __future__ import annotations

from pathlib import Path

from flowprobe.data.folders import imagefolder, imagenette
from flowprobe.data.imageset import Dataset, ImageSet, balanced_subset, channel_stats
from flowprobe.data.mini import cifar10_mini, mini_archive
from flowprobe.data.pixels import convert_channels
from flowprobe.data.source import RawSplit, Source
from flowprobe.data.cifar_mnist import cifar10, mnist
from flowprobe.errors import DataError

DATASETS = ("cifar10-mini", "cifar10", "mnist", "imagenette", "imagefolder")
DEFAULT_ROOT = "data"


def load_dataset(
    name: str,
    *,
    root: str | Path = DEFAULT_ROOT,
    resolution: int | None = None,
    channels: int | None = None,
    download: bool = False,
    variant: str | None = None,
    max_per_class: int | None = None,
    seed: int = 0,
    max_images: int | None = None,
) -> Dataset:
    """Load `name` from `root` as uint8 [N, C, R, R] train/test tensors.

    resolution: side R; images whose size differs are resized (shorter side to R, antialiased
        bilinear, centre crop). None keeps the native size (that of the first train image).
    channels: 1 converts RGB to ITU-R 601 luma, 3 replicates gray; None keeps the source's.
    variant: ImageNette size, '160px' (default), '320px' or 'full'.
    max_per_class: class-balanced subset of each split, chosen by a permutation seeded
        with `seed` (deterministic); None keeps everything.
    max_images: at most this many images per split, spread over the classes as evenly as
        possible (one of every class before a second of any; `balanced_subset`).
    mean/std of the result are per channel over the (subset) train split, in [0, 1] units.
    """
    if channels not in (None, 1, 3):
        raise DataError(f"channels={channels}: use 1 (gray), 3 (RGB) or null (keep the source's)")
    source = _open_source(name, root, download, variant)
    size = resolution or source.train.native
    if size < 1:
        raise DataError(f"resolution={resolution}: must be a positive number of pixels")
    train = _materialise(source.train, size, channels, max_per_class, seed, max_images)
    test = _materialise(source.test, size, channels, max_per_class, seed, max_images)
    mean, std = channel_stats(train.images)
    return Dataset(name=name, train=train, test=test, classes=source.classes, mean=mean, std=std)


def _open_source(name: str, root: str | Path, download: bool, variant: str | None) -> Source:
    if name not in DATASETS:
        raise DataError(f"unknown dataset '{name}'; use one of {', '.join(DATASETS)}")
    if variant is not None and name != "imagenette":
        raise DataError(f"variant '{variant}' applies to imagenette only; remove it for {name}")
    folder = Path(root).expanduser().resolve()
    if name == "cifar10-mini":
        return cifar10_mini(mini_archive(root, DEFAULT_ROOT))
    if name == "cifar10":
        return cifar10(folder, download)
    if name == "mnist":
        return mnist(folder, download)
    if name == "imagenette":
        return imagenette(folder, download, variant)
    return imagefolder(folder)


def _materialise(split: RawSplit, size: int, channels: int | None, max_per_class: int | None, seed: int,
                 max_images: int | None) -> ImageSet:
    indices = balanced_subset(split.labels, max_per_class, seed, max_images)
    images = convert_channels(split.read(indices, size), channels)
    return ImageSet(images=images, labels=split.labels[indices].clone(), indices=indices)

