"""Datasets as in-memory uint8 tensors and a device-side batch loader (docs/design.md §2b).

    data = load_dataset("cifar10-mini")            # the shipped subset, offline
    batches = Batches(data.train, batch_size=64, mean=data.mean, std=data.std,
                      shuffle=True, augment=True, device="cuda", seed=0)
"""

from flowprobe.data.imageset import Dataset, ImageSet, balanced_subset, channel_stats
from flowprobe.data.load import DATASETS, load_dataset
from flowprobe.data.loader import Batches, crop_flip
from flowprobe.data.pixels import convert_channels, resize_square

__all__ = [
    "DATASETS",
    "Batches",
    "Dataset",
    "ImageSet",
    "balanced_subset",
    "channel_stats",
    "convert_channels",
    "crop_flip",
    "load_dataset",
    "resize_square",
]
