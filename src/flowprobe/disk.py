"""Disk estimate of every run's activations.h5, before anything runs.

size = images × bytes per image (flowprobe.activations.bytes_per_image: C·4·4 values per
conv probe point with avgpool4, D per vector point, the same again per pre-BN output when
saturation.source is prebn_nearest4, times 2 or 4 bytes for float16 / float32, plus float32
logits and int64 label and index) for each seed of each run. Models are built on the meta
device (no memory, no weights). Images are the dataset's train + test sizes, capped by
max_per_class; an `imagefolder` root is counted. Compression is not counted (an upper bound).
The sibling of a `prune: {from: observed}` run is estimated with the full run's model, an upper
bound too (`upper_bound`): its architecture is known only once the full run's probes exist.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import pandas as pd

from flowprobe.errors import FlowprobeError
from flowprobe.sweep import is_observed_prune

# train and test images of the datasets flowprobe knows (ImageNette: the v2 split, any size)
DATASET_IMAGES = {
    "cifar10": (50_000, 10_000),
    "mnist": (60_000, 10_000),
    "imagenette": (9_469, 3_925),
    "cifar10-mini": (5_000, 1_000),
}
DATASET_CLASSES = 10
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}
GIB = 2**30


def split_images(run: dict, data_root: str, max_per_class: int | None) -> tuple[list[int], list[int]]:
    """Images per class of the train and test split of `run`'s dataset, after `max_per_class`
    and the run's `max_images` (spread over the classes as `balanced_subset` spreads it).

    Known datasets are taken as class-balanced; an imagefolder root is counted file by file.

    Args:
        run: one run of a loaded config (dataset, dataset_root).
        data_root: the config's data_root (used when the run has no dataset_root).
        max_per_class: cap per class and split, or None.
    Returns:
        (train counts per class, test counts per class).
    """
    if run["dataset"] == "imagefolder":
        root = Path(run.get("dataset_root") or data_root).expanduser()
        counts = [_count_folder(root / split) for split in ("train", "test")]
    else:
        counts = [_balanced(n) for n in DATASET_IMAGES[run["dataset"]]]
    if max_per_class is not None:
        counts = [[min(c, max_per_class) for c in split] for split in counts]
    if run.get("max_images") is not None:
        counts = [_spread(split, run["max_images"]) for split in counts]
    return counts[0], counts[1]


def _spread(counts: list[int], total: int) -> list[int]:
    """At most `total` items taken one per class and round, from classes holding `counts`."""
    out = [0] * len(counts)
    while total > 0 and any(o < c for o, c in zip(out, counts)):
        for i, c in enumerate(counts):
            if total > 0 and out[i] < c:
                out[i], total = out[i] + 1, total - 1
    return out


def _balanced(n: int) -> list[int]:
    return [n // DATASET_CLASSES + (i < n % DATASET_CLASSES) for i in range(DATASET_CLASSES)]


def _count_folder(folder: Path) -> list[int]:
    if not folder.is_dir():
        raise FlowprobeError(f"{folder}: no such folder, so its images cannot be counted")
    return [
        sum(1 for f in os.scandir(sub.path) if Path(f.name).suffix.lower() in IMAGE_SUFFIXES)
        for sub in sorted(os.scandir(folder), key=lambda e: e.name)
        if sub.is_dir()
    ]


@functools.lru_cache(maxsize=None)
def _model_bytes(spec: str, options: str, classes: int, channels: int, size: int, reduction: str, dtype: str,
                 prebn: bool) -> tuple[int, int]:
    """(parameters, stored bytes per image) of a model, built once on the meta device without
    random init (a resolution sweep asks for the same model several times)."""
    import torch

    from flowprobe.activations import bytes_per_image
    from flowprobe.config import skip_random_init
    from flowprobe.models import build_model

    with torch.device("meta"), skip_random_init():
        model = build_model(spec, classes, in_channels=channels, input_size=size, **json.loads(options))
    # the shape trace (a forward pass on meta tensors) outside both modes: a torch function mode
    # intercepts every op, which made it 20x slower
    return sum(p.numel() for p in model.parameters()), bytes_per_image(model, classes, reduction, dtype, prebn)


def run_estimate(name: str, run: dict, config: dict) -> dict:
    """One row of disk_table for run `name` of a loaded config (flowprobe.config.load_config).

    Args:
        name: the run's name.
        run: the run with defaults filled in.
        config: the whole loaded config (activations, saturation, data_root).
    Returns:
        dict with the columns of disk_table.
    """
    act = config["activations"]
    train, test = split_images(run, config["data_root"], act["max_per_class"] or run.get("max_per_class"))
    channels = run["channels"] or (1 if run["dataset"] == "mnist" else 3)
    prebn = config["saturation"]["source"] == "prebn_nearest4"
    parameters, per_image = _model_bytes(run["model"], json.dumps(run["model_options"], sort_keys=True), len(train),
                                         channels, run["resolution"], act["reduction"], act["dtype"], prebn)
    images = sum(train) + sum(test)
    return {
        "run": name,
        "model": run["model"],
        "dataset": run["dataset"],
        "resolution": run["resolution"],
        "parameters": parameters,
        "bytes_per_image": per_image,
        "images": images,
        "seeds": len(run["seeds"]),
        "gib_per_seed": per_image * images / GIB,
        "gib": per_image * images * len(run["seeds"]) / GIB,
        # an observed prune is cut from the full model, whose size is all that is known before it runs
        "upper_bound": is_observed_prune(run),
    }


def disk_table(config: dict) -> pd.DataFrame:
    """The disk estimate of every run of a loaded config.

    Args:
        config: as returned by flowprobe.config.load_config.
    Returns:
        one row per run: run, model, dataset, resolution, parameters, bytes_per_image, images
        (train + test), seeds, gib_per_seed (one activations.h5), gib (all seeds) and upper_bound
        (True for an observed prune: the full model's numbers, its own are at most these).
    """
    return pd.DataFrame([run_estimate(name, run, config) for name, run in config["runs"].items()])


def settings_line(config: dict) -> str:
    """The settings the estimate depends on, in words."""
    act = config["activations"]
    prebn = config["saturation"]["source"] == "prebn_nearest4"
    return (f"{act['dtype']}, reduction {act['reduction']}, pre-BN maps {'stored' if prebn else 'not stored'}, "
            f"compression {act['compression'] or 'none'} (not counted), keep_activations: "
            f"{str(config['keep_activations']).lower()}")


def startup_report(config: dict, where: str | Path = ".") -> str:
    """The lines the workflow prints before it schedules anything.

    Args:
        config: a loaded config.
        where: the folder whose free space is reported (the working directory).
    Returns:
        two lines: the estimated size of each run's activations.h5, then the total and the free
        space (with a hint when the total does not fit); one line if no estimate is possible.
    """
    try:
        table = disk_table(config)
    except FlowprobeError as err:
        return f"flowprobe: no disk estimate ({err})\n"
    runs = ", ".join(f"{r.run} {'≤' if r.upper_bound else ''}{r.gib:.2f}" for r in table.itertuples())
    free, total = _free_gib(where), table["gib"].sum()
    kept = "kept" if config["keep_activations"] else "deleted after use (keep_activations: false)"
    short = ""
    if total > free and config["keep_activations"]:
        short = (" - more than is free: set keep_activations: false, activations.compression: lzf or "
                 "activations.max_per_class, or run fewer targets (README, Disk)")
    return (
        f"flowprobe: activations.h5 estimate ({settings_line(config)}), GiB per run: {runs}{_bound_note(table)}\n"
        f"flowprobe: activations.h5 total {total:.1f} GiB, {kept}; {free:.1f} GiB free here{short}\n"
    )


def _bound_note(table: pd.DataFrame) -> str:
    if not table["upper_bound"].any():
        return ""
    return " (≤: an observed prune, estimated with its full model until its probes decide the cut)"


def _free_gib(where: str | Path) -> float:
    import shutil

    return shutil.disk_usage(where).free / GIB
