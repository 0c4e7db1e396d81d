"""The one rule for choosing a torch device (torch only, so light stages need not import the
training stack or torchvision)."""

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """`auto` (or None) picks CUDA when present, else CPU; anything else is passed to torch.device."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
