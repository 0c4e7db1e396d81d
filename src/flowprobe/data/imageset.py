"""In-memory image sets: uint8 tensors [N, C, H, W] with labels and source indices."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from flowprobe.errors import DataError


@dataclass
class ImageSet:
    """One split. `indices[i]` is the position of image i in the original split (the order
    of the torchvision data set, or of the sorted archive for cifar10-mini); activations.h5
    records it as /indices/{split}."""

    images: torch.Tensor  # uint8 [N, C, H, W], CPU
    labels: torch.Tensor  # int64 [N]
    indices: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)

    def sample(self, count: int | None, seed: int = 0) -> ImageSet:
        """At most `count` images drawn without replacement by a permutation seeded with `seed`,
        kept in split order (all of them when `count` is None or not smaller than the split)."""
        if count is None or count >= len(self):
            return self
        if count < 1:
            raise DataError(f"count={count}: must be a positive integer or None")
        chosen = torch.sort(torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:count]).values
        return ImageSet(self.images[chosen], self.labels[chosen], self.indices[chosen])


@dataclass
class Dataset:
    """Train and test split plus the per-channel statistics of the train split in [0, 1]."""

    name: str
    train: ImageSet
    test: ImageSet
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.train.images.shape[1]

    @property
    def resolution(self) -> int:
        return self.train.images.shape[-1]


def balanced_subset(labels: torch.Tensor, max_per_class: int | None, seed: int = 0,
                    max_images: int | None = None) -> torch.Tensor:
    """Sorted indices of at most `max_per_class` items per class, drawn without replacement
    by a permutation from a generator seeded with `seed` (same seed, same subset).

    With `max_images`, at most that many of them in all, as even over the classes as possible:
    one item of every class (classes in a seeded order) before a second of any, so 4 images of
    a 10-class split are 4 images of 4 classes. The per-class draws do not depend on
    `max_images`, so a smaller cap picks a subset of a larger one's items."""
    for name, value in (("max_per_class", max_per_class), ("max_images", max_images)):
        if value is not None and value < 1:
            raise DataError(f"{name}={value}: must be a positive integer or None")
    if max_per_class is None and max_images is None:
        return torch.arange(len(labels))
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for cls in torch.unique(labels):
        members = torch.nonzero(labels == cls).flatten()
        order = torch.randperm(len(members), generator=generator)
        chosen.append(members[order[:max_per_class]])
    if max_images is not None:
        classes = torch.randperm(len(chosen), generator=generator).tolist()
        picked, depth = [], 0
        while len(picked) < max_images and any(depth < len(chosen[c]) for c in classes):
            picked += [chosen[c][depth] for c in classes if depth < len(chosen[c])]
            depth += 1
        chosen = [torch.stack(picked[:max_images])] if picked else []
    return torch.sort(torch.cat(chosen)).values if chosen else torch.zeros(0, dtype=torch.long)


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std (ddof 0) of uint8 images in [0, 1] units.

    Two passes in float64: mean = Σx / n, then std = sqrt(Σ(x − mean)² / n), which avoids the
    cancellation of Σx²/n − mean²; chunks bound the float memory."""
    if len(images) == 0:
        raise DataError("cannot compute normalisation statistics of an empty train split")
    channels = images.shape[1]
    count = images.numel() // channels
    total = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        total += images[start : start + chunk].double().sum(dim=(0, 2, 3))
    mean = total / count / 255
    squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        centred = images[start : start + chunk].double() / 255 - mean.view(1, -1, 1, 1)
        squares += centred.square().sum(dim=(0, 2, 3))
    std = (squares / count).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())
