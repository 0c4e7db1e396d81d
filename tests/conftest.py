"""Shared pytest fixtures: tiny data sets FABRICATED on disk in the real formats.

Each fixture is session-scoped, built once in tmp_path_factory, and must be treated as
read-only (copy it with shutil.copytree before damaging it). Pass the returned folder as
`root=` to flowprobe.data.load_dataset; the real torchvision classes parse every file.

fixture           load_dataset name   layout under the returned root            train / test
----------------  ------------------  ----------------------------------------  ------------
cifar10_root      'cifar10'           cifar-10-batches-py/ data_batch_1..5,     100 / 20
                                      test_batch, batches.meta (pickles)        32x32 RGB
mnist_root        'mnist'             MNIST/raw/{train,t10k}-{images-idx3,      60 / 20
                                      labels-idx1}-ubyte (big-endian idx)       28x28 gray
imagenette_root   'imagenette'        imagenette2-160/{train,val}/<wnid>/       30 / 20
                  (variant '160px')   *.JPEG, the 10 real wnids                 20x26 RGB
imagefolder_root  'imagefolder'       {train,test}/{circle,cross,square}/*.png  12 / 6
                                                                                16x16 RGB
Every split is class-balanced (the counts above divide evenly by the number of classes).
Pixels are class-structured: an image of label y has pixels drawn from
[LABEL_STEP*y, LABEL_STEP*y + NOISE) (see `label_pixels`); exactly so for the lossless
formats (pickle, idx, PNG), and for its mean pixel under JPEG loss too, so tests can read
the label back (y = mean pixel // LABEL_STEP, see `label_of`) and tiny models can learn.
cifar10-mini needs no fixture: the shipped archive is small; use max_per_class.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torchvision.datasets as tvd

LABEL_STEP = 25  # pixel range of label y starts at LABEL_STEP * y (y < 10 keeps it < 256)
NOISE = 20  # width of each label's pixel range; < LABEL_STEP so ranges do not overlap
CIFAR_PER_BATCH = 20
SHAPES = {"cifar10": (3, 32, 32), "mnist": (1, 28, 28), "imagenette": (3, 20, 26), "imagefolder": (3, 16, 16)}
IMAGEFOLDER_CLASSES = ("circle", "cross", "square")
# The files of real snakemake runs, slowest first: `make test` hands whole files to its workers in
# collection order, so these start first and the short unit tests fill the gaps at the end.
SLOW_FILES = ("test_smoke.py", "test_slurm.py", "test_resume.py", "test_workflow.py", "test_sweep.py",
              "test_traced_workflow.py", "test_disk.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FILES)))  # stable: file order kept


def label_pixels(labels: np.ndarray, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """uint8 [N, *shape] with pixel values in [LABEL_STEP*y, LABEL_STEP*y + NOISE)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, NOISE, size=(len(labels), *shape))
    return (LABEL_STEP * labels.reshape(-1, *[1] * len(shape)) + noise).astype(np.uint8)


def label_of(images) -> "torch.Tensor":
    """The label encoded by `label_pixels` in uint8 images [N, C, H, W] (mean pixel based)."""
    return images.flatten(1).float().mean(1).floor_divide(LABEL_STEP).long()


def write_cifar10(root: Path) -> Path:
    folder = root / tvd.CIFAR10.base_folder
    folder.mkdir(parents=True)
    names = [name for name, _ in tvd.CIFAR10.train_list + tvd.CIFAR10.test_list]
    for seed, name in enumerate(names):
        labels = np.arange(CIFAR_PER_BATCH) % 10
        data = label_pixels(labels, SHAPES["cifar10"], seed).reshape(CIFAR_PER_BATCH, -1)  # rows of R,G,B planes
        batch = {"batch_label": name, "labels": labels.tolist(), "data": data,
                 "filenames": [f"{name}_{i}.png" for i in range(CIFAR_PER_BATCH)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    meta = {"label_names": classes, "num_cases_per_batch": CIFAR_PER_BATCH, "num_vis": 3072}
    with open(folder / tvd.CIFAR10.meta["filename"], "wb") as f:
        pickle.dump(meta, f)
    return root


def _idx_file(path: Path, array: np.ndarray) -> None:
    """IDX format (LeCun): magic 0x0000 08 nd (uint8, nd dims), nd big-endian uint32 sizes, data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, count, seed in (("train", 60, 0), ("t10k", 20, 1)):
        labels = np.arange(count) % 10
        _idx_file(raw / f"{prefix}-images-idx3-ubyte", label_pixels(labels, SHAPES["mnist"][1:], seed))
        _idx_file(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def _write_images(folder: Path, classes, per_class: int, shape, suffix: str, seed: int) -> None:
    labels = np.arange(per_class * len(classes)) % len(classes)
    pixels = label_pixels(labels, shape, seed)
    for i, (label, image) in enumerate(zip(labels, pixels)):
        target = folder / classes[label]
        target.mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(image.transpose(1, 2, 0)).save(target / f"{classes[label]}_{i:04d}{suffix}", quality=95)


IMAGENETTE_FOLDERS = {"160px": "imagenette2-160", "320px": "imagenette2-320", "full": "imagenette2"}


def write_imagenette(root: Path, variants=("160px",)) -> Path:
    """ImageNette trees of the given size variants (the folders torchvision extracts them to)."""
    wnids = sorted(tvd.Imagenette._WNID_TO_CLASS)
    for variant in variants:
        tree = root / IMAGENETTE_FOLDERS[variant]
        _write_images(tree / "train", wnids, 3, SHAPES["imagenette"], ".JPEG", seed=0)
        _write_images(tree / "val", wnids, 2, SHAPES["imagenette"], ".JPEG", seed=1)
    return root


def write_paper_data(root: Path) -> Path:
    """Every data set config.yaml's runs read: CIFAR-10, MNIST, ImageNette 160px and 320px."""
    write_cifar10(root)
    write_mnist(root)
    return write_imagenette(root, variants=("160px", "320px"))


def write_imagefolder(root: Path) -> Path:
    _write_images(root / "train", IMAGEFOLDER_CLASSES, 4, SHAPES["imagefolder"], ".png", seed=0)
    _write_images(root / "test", IMAGEFOLDER_CLASSES, 2, SHAPES["imagefolder"], ".png", seed=1)
    return root


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> Path:
    return write_cifar10(tmp_path_factory.mktemp("cifar10"))


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    return write_mnist(tmp_path_factory.mktemp("mnist"))


@pytest.fixture(scope="session")
def imagenette_root(tmp_path_factory) -> Path:
    return write_imagenette(tmp_path_factory.mktemp("imagenette"))


@pytest.fixture(scope="session")
def imagefolder_root(tmp_path_factory) -> Path:
    return write_imagefolder(tmp_path_factory.mktemp("imagefolder"))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models run far faster single-threaded on the 2-core CI machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
