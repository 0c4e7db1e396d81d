"""Pixel-level conversions of uint8 image tensors: square resize, channel count, decoding."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

from flowprobe.errors import DataError
from flowprobe.logs import with_progress

# ITU-R BT.601 luma: Y = 0.299 R + 0.587 G + 0.114 B (the weights PIL's "L" mode uses)
LUMA_601 = (0.299, 0.587, 0.114)
PROGRESS_MIN = 2000  # decode loops shorter than this run without a progress bar


def resize_square(images: torch.Tensor, size: int, chunk: int = 1024) -> torch.Tensor:
    """uint8 [N, C, H, W] -> uint8 [N, C, size, size].

    The shorter side is scaled to `size` (bilinear, antialiased so that downsampling
    averages instead of aliasing), then the centre size × size window is kept; square
    inputs are therefore resized without cropping. Unchanged if already size × size."""
    height, width = images.shape[-2:]
    if height == width == size:
        return images
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    out = torch.empty((len(images), images.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, len(images), chunk):
        batch = images[start : start + chunk].float()
        batch = F.interpolate(batch, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
        out[start : start + chunk] = batch[..., top : top + size, left : left + size].round().clamp(0, 255).to(torch.uint8)
    return out


def convert_channels(images: torch.Tensor, channels: int | None) -> torch.Tensor:
    """uint8 [N, C, H, W] with C in {1, 3} -> `channels` channels (None keeps C).

    RGB -> gray is the ITU-R 601 luma, rounded; gray -> RGB replicates the plane."""
    have = images.shape[1]
    if channels is None or channels == have:
        return images
    if channels == 3 and have == 1:
        return images.expand(-1, 3, -1, -1).contiguous()
    if channels == 1 and have == 3:
        weights = torch.tensor(LUMA_601, dtype=torch.float32).view(1, 3, 1, 1)
        luma = torch.empty((len(images), 1, *images.shape[-2:]), dtype=torch.uint8)
        for start in range(0, len(images), 4096):
            batch = images[start : start + 4096].float()
            luma[start : start + 4096] = (batch * weights).sum(1, keepdim=True).round().clamp(0, 255)
        return luma
    raise DataError(f"cannot convert {have}-channel images to channels={channels}; use 1, 3 or null")


def pil_to_uint8(image: PIL.Image.Image) -> torch.Tensor:
    """A PIL image -> uint8 [3, H, W] (RGB, as torchvision's default loader converts)."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def decode_images(
    items: Sequence,
    open_image: Callable[[object], PIL.Image.Image],
    size: int,
    describe: Callable[[object], str] = str,
) -> torch.Tensor:
    """Decode `items` with `open_image` (a path or bytes -> PIL image) into uint8
    [N, 3, size, size], resizing each image with `resize_square`. A file PIL cannot read
    raises DataError naming it (`describe(item)`)."""
    out = torch.empty((len(items), 3, size, size), dtype=torch.uint8)
    bar = with_progress(items, "decoding images", enabled=len(items) >= PROGRESS_MIN, step="image")
    for i, item in enumerate(bar):
        try:
            with open_image(item) as image:
                pixels = pil_to_uint8(image)
        except (OSError, SyntaxError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
            raise DataError(f"{describe(item)}: not a readable image ({err}); replace or delete the file") from err
        out[i] = resize_square(pixels.unsqueeze(0), size)[0]
    return out


def open_path(path: str | Path) -> PIL.Image.Image:
    return PIL.Image.open(path)


def open_bytes(data: bytes) -> PIL.Image.Image:
    return PIL.Image.open(io.BytesIO(data))


def shorter_side(open_image: Callable[[object], PIL.Image.Image], item: object, describe=str) -> int:
    """The shorter side of one image, read from its header (no full decode)."""
    try:
        with open_image(item) as image:
            return min(image.size)
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{describe(item)}: not a readable image ({err}); replace or delete the file") from err
