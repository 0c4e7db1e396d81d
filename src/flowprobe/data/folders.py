"""ImageNette and bring-your-own image folders through the real torchvision classes."""

from __future__ import annotations

from pathlib import Path

import torchvision.datasets as tvd

from flowprobe.data.pixels import open_path
from flowprobe.data.source import Source, fetch_if_missing, image_split, require_folder
from flowprobe.errors import DataError

IMAGENETTE_VARIANTS = ("160px", "320px", "full")
# torchvision's own table of the 10 ImageNette WordNet ids (one source of truth for the
# class list; the attribute is private, so a torchvision change surfaces here first).
IMAGENETTE_WNIDS = sorted(tvd.Imagenette._WNID_TO_CLASS)


def _path_only(path: str) -> str:
    """A torchvision `loader` that returns the path: list samples now, decode them later."""
    return path


def imagenette(root: Path, download: bool, variant: str | None) -> Source:
    """ImageNette (Howard 2019), `variant` in 160px/320px/full (default 160px); the
    torchvision 'val' split serves as test split."""
    size = variant or "160px"
    if size not in IMAGENETTE_VARIANTS:
        raise DataError(f"imagenette variant '{variant}' is unknown; use one of {', '.join(IMAGENETTE_VARIANTS)}")
    url = tvd.Imagenette._ARCHIVES[size][0]
    archive, tree = url.rsplit("/", 1)[1], root / Path(url).stem
    fetch_if_missing(
        tree.is_dir(),
        download,
        lambda: tvd.Imagenette(root, split="val", size=size, download=True),
        f"ImageNette {size} not found in {tree}: extract {archive} ({url}) into {root}",
    )
    splits = []
    for split in ("train", "val"):
        folder = tree / split
        require_folder(folder, f"the ImageNette tree is incomplete; extract {archive} into {root} again")
        try:
            data = tvd.Imagenette(root, split=split, size=size, loader=_path_only)
        except (FileNotFoundError, KeyError) as err:
            raise DataError(f"{folder}: not an ImageNette split ({err!r}); extract {archive} into {root} again") from err
        missing = sorted(set(IMAGENETTE_WNIDS) - set(data.wnids))
        if missing:
            raise DataError(
                f"{folder}: class folders {', '.join(missing)} are missing (ImageNette has 10); "
                f"extract {archive} into {root} again"
            )
        samples = [data[i] for i in range(len(data))]
        splits.append(image_split([p for p, _ in samples], [y for _, y in samples], open_path))
    classes = [names[0] for names in data.classes]
    return Source(classes=classes, train=splits[0], test=splits[1])


def imagefolder(root: Path) -> Source:
    """Any root/{train,test}/<class>/*.{jpg,png} tree, read with torchvision's ImageFolder
    (classes = sorted folder names; images converted to RGB)."""
    layout = f"expected {root}/train/<class>/*.jpg|png and {root}/test/<class>/*.jpg|png"
    splits, classes = [], {}
    for split in ("train", "test"):
        folder = root / split
        require_folder(folder, layout)
        try:
            data = tvd.ImageFolder(folder, loader=_path_only)
        except FileNotFoundError as err:  # no class folder, or a class folder without images
            raise DataError(f"{folder}: empty split ({err}); {layout}") from err
        classes[split] = data.classes
        splits.append(image_split([p for p, _ in data.samples], data.targets, open_path))
    if classes["train"] != classes["test"]:
        raise DataError(
            f"{root / 'test'}: classes {classes['test']} differ from train's {classes['train']}; "
            "both splits need the same class folders"
        )
    return Source(classes=classes["train"], train=splits[0], test=splits[1])
