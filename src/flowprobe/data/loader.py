"""Mini-batches straight from a uint8 tensor on the device (airbench style: no workers).

Training augmentation of He et al. 2016 §4.2: 4-pixel zero padding, a random 32×32 (H×W)
crop and a random horizontal flip, done for the whole batch at once by one gather.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from flowprobe.data.imageset import ImageSet

PAD = 4  # He et al. 2016: "4 pixels are padded on each side"
# The random streams of one epoch of training, told apart by the third SeedSequence word.
BATCH_STREAM = 0  # batch order and augmentation (this module)
MODEL_STREAM = 1  # what the model draws itself: dropout masks (torch's global generators)


def stream_seed(seed: int, epoch: int, stream: int) -> int:
    """The 64-bit seed of random stream `stream` in epoch `epoch` of a run with seed `seed`.

    numpy's SeedSequence hashes the words (seed, epoch, stream) into its entropy pool, so every
    triple starts its own stream: unlike `seed + epoch`, seed s at epoch e + 1 shares nothing
    with seed s + 1 at epoch e. Training derives every generator from this at the start of an
    epoch, so (seed, epoch) is all a resumed run needs to continue the streams exactly.

    Args:
        seed: the run's seed (≥ 0).
        epoch: 0-based epoch.
        stream: BATCH_STREAM or MODEL_STREAM.

    Returns:
        An int in [0, 2**64) for `torch.Generator.manual_seed` / `torch.manual_seed`.
    """
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, np.uint64)[0])


class Batches:
    """Iterate (x float32 [B, C, H, W] normalised, y int64 [B]) on `device`, epoch after epoch.

    Epoch e (the e-th `iter()`, or the one set by `set_epoch(e)`) draws its order and its
    augmentation from a CPU generator seeded with `stream_seed(seed, e, BATCH_STREAM)`, so a run
    resumed at epoch e sees exactly the batches of an uninterrupted run, on any device, and no
    two (seed, epoch) pairs share an order.
    x = (crop_flip(u) / 255 − mean) / std with u the uint8 image; zero padding is applied to
    u, i.e. padded pixels are black, as torchvision's RandomCrop(padding=4) before Normalize.
    """

    def __init__(
        self,
        imageset: ImageSet,
        *,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        shuffle: bool = False,
        augment: bool = False,
        device: str | torch.device = "cpu",
        seed: int = 0,
        drop_last: bool = False,
        channels_last: bool | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.images = imageset.images.to(self.device)  # once; stays uint8 to save memory
        self.labels = imageset.labels.to(self.device)
        channels = self.images.shape[1]
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device).view(1, channels, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device).view(1, channels, 1, 1)
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.seed, self.drop_last = seed, drop_last
        self.channels_last = self.device.type == "cuda" if channels_last is None else channels_last
        self.epoch = 0

    def __len__(self) -> int:
        count = len(self.labels) / self.batch_size
        return math.floor(count) if self.drop_last else math.ceil(count)

    def set_epoch(self, epoch: int) -> None:
        """Make the next `iter()` produce epoch `epoch` (for resuming from a checkpoint)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(stream_seed(self.seed, self.epoch, BATCH_STREAM))
        self.epoch += 1
        count = len(self.labels)
        order = torch.randperm(count, generator=generator) if self.shuffle else torch.arange(count)
        if self.augment:
            shifts = torch.randint(0, 2 * PAD + 1, (count, 2), generator=generator).to(self.device)
            flips = (torch.rand(count, generator=generator) < 0.5).to(self.device)
        order = order.to(self.device)
        for b in range(len(self)):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            images = self.images[batch]
            if self.augment:
                images = crop_flip(images, shifts[batch], flips[batch])
            yield self._normalise(images), self.labels[batch]

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() / 255 - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def crop_flip(images: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor, pad: int = PAD) -> torch.Tensor:
    """Zero-pad by `pad`, take the H×W window at (row, col) = shifts[i] of the padded image,
    mirror it left-right where flips[i]:
    out[i, c, h, w] = padded[i, c, shifts[i,0] + h, shifts[i,1] + (W−1−w if flips[i] else w)].
    One `gather` over the flattened padded planes serves the whole batch (5× faster on CPU
    than four-tensor advanced indexing)."""
    count, channels, height, width = images.shape
    padded = F.pad(images, (pad, pad, pad, pad)).flatten(2)  # [B, C, (H+2p)(W+2p)]
    rows = shifts[:, 0:1] + torch.arange(height, device=images.device)  # [B, H]
    cols = torch.arange(width, device=images.device).expand(count, width)
    cols = torch.where(flips[:, None], width - 1 - cols, cols) + shifts[:, 1:2]  # [B, W]
    flat = rows[:, :, None] * (width + 2 * pad) + cols[:, None, :]  # [B, H, W]
    flat = flat.view(count, 1, height * width).expand(count, channels, height * width)
    return padded.gather(2, flat).view(count, channels, height, width)
