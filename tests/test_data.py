"""flowprobe.data: sources through torchvision, conversions, errors, Batches, cifar10-mini."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import tarfile
import urllib.error
import urllib.request

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import CIFAR_PER_BATCH, IMAGEFOLDER_CLASSES, label_of

from flowprobe.data import Batches, ImageSet, crop_flip, load_dataset
from flowprobe.data.mini import ARCHIVE, REPO_DATA
from flowprobe.errors import DataError


def _numpy_stats(images: torch.Tensor):
    x = images.double().numpy() / 255
    return x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))


# ---------------------------------------------------------------- sources


def test_cifar10_reads_the_pickled_batches(cifar10_root):
    data = load_dataset("cifar10", root=cifar10_root)
    assert data.train.images.shape == (5 * CIFAR_PER_BATCH, 3, 32, 32)
    assert data.test.images.shape == (CIFAR_PER_BATCH, 3, 32, 32)
    assert data.train.images.dtype == torch.uint8 and data.train.labels.dtype == torch.int64
    assert data.classes[0] == "airplane" and data.num_classes == 10
    with open(cifar10_root / "cifar-10-batches-py" / "data_batch_2", "rb") as f:
        batch = pickle.load(f)
    first = data.train.images[CIFAR_PER_BATCH]  # first image of the second batch
    assert torch.equal(first.flatten(), torch.from_numpy(batch["data"][0]))
    assert data.train.labels[CIFAR_PER_BATCH : 2 * CIFAR_PER_BATCH].tolist() == batch["labels"]
    assert torch.equal(data.train.indices, torch.arange(5 * CIFAR_PER_BATCH))
    assert torch.equal(label_of(data.test.images), data.test.labels)
    mean, std = _numpy_stats(data.train.images)
    assert np.allclose(data.mean, mean, atol=1e-12) and np.allclose(data.std, std, atol=1e-12)


def test_mnist_reads_the_idx_files(mnist_root):
    data = load_dataset("mnist", root=mnist_root)
    assert data.train.images.shape == (60, 1, 28, 28) and data.test.images.shape == (20, 1, 28, 28)
    raw = (mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte").read_bytes()
    assert torch.equal(data.test.images[3, 0].flatten(), torch.frombuffer(bytearray(raw[16 + 3 * 784 : 16 + 4 * 784]), dtype=torch.uint8))
    assert torch.equal(data.train.labels, torch.arange(60) % 10)
    assert len(data.mean) == 1 and data.in_channels == 1


def test_imagenette_uses_wnid_folders_and_val_as_test(imagenette_root):
    data = load_dataset("imagenette", root=imagenette_root, variant="160px")
    assert data.classes[0] == "tench" and data.num_classes == 10
    # 20x26 images: shorter side 20 is native, the centre 20x20 window is kept
    assert data.train.images.shape == (30, 3, 20, 20) and data.test.images.shape == (20, 3, 20, 20)
    assert torch.equal(data.train.labels.bincount(), torch.full((10,), 3))
    wnid = sorted((imagenette_root / "imagenette2-160" / "train").iterdir())[0]
    first = np.asarray(PIL.Image.open(sorted(wnid.iterdir())[0]).convert("RGB"))[:, 3:23]
    assert torch.equal(data.train.images[0], torch.from_numpy(first.copy()).permute(2, 0, 1))


def test_imagefolder_reads_pngs_exactly(imagefolder_root):
    data = load_dataset("imagefolder", root=imagefolder_root)
    assert data.classes == list(IMAGEFOLDER_CLASSES)
    assert data.train.images.shape == (12, 3, 16, 16) and data.test.images.shape == (6, 3, 16, 16)
    png = sorted((imagefolder_root / "test" / "cross").iterdir())[1]
    pixels = torch.from_numpy(np.asarray(PIL.Image.open(png)).copy()).permute(2, 0, 1)
    assert torch.equal(data.test.images[3], pixels) and data.test.labels[3] == 1


# ---------------------------------------------------------------- conversions


def test_resolution_matches_pil_antialiased_bilinear(cifar10_root, mnist_root):
    full = load_dataset("cifar10", root=cifar10_root)
    small = load_dataset("cifar10", root=cifar10_root, resolution=16)
    assert small.train.images.shape == (100, 3, 16, 16) and small.resolution == 16
    image = PIL.Image.fromarray(full.train.images[7].permute(1, 2, 0).numpy())
    reference = torch.from_numpy(np.asarray(image.resize((16, 16), PIL.Image.BILINEAR)).copy()).permute(2, 0, 1)
    assert (small.train.images[7].int() - reference.int()).abs().max() <= 1
    big = load_dataset("mnist", root=mnist_root, resolution=32)
    assert big.test.images.shape == (20, 1, 32, 32)
    assert torch.equal(label_of(big.test.images), big.test.labels)


def test_channels_luma_and_replication(cifar10_root, mnist_root):
    rgb = load_dataset("cifar10", root=cifar10_root)
    gray = load_dataset("cifar10", root=cifar10_root, channels=1)
    assert gray.train.images.shape == (100, 1, 32, 32) and len(gray.mean) == 1
    image = PIL.Image.fromarray(rgb.train.images[5].permute(1, 2, 0).numpy())
    reference = torch.from_numpy(np.asarray(image.convert("L")).copy())  # PIL: ITU-R 601-2 luma
    assert (gray.train.images[5, 0].int() - reference.int()).abs().max() <= 1
    mono = load_dataset("mnist", root=mnist_root)
    triple = load_dataset("mnist", root=mnist_root, channels=3)
    assert triple.train.images.shape == (60, 3, 28, 28)
    assert all(torch.equal(triple.train.images[:, c], mono.train.images[:, 0]) for c in range(3))
    assert triple.mean == pytest.approx(mono.mean * 3)


def test_max_per_class_is_balanced_and_seeded(cifar10_root):
    full = load_dataset("cifar10", root=cifar10_root)
    sub = load_dataset("cifar10", root=cifar10_root, max_per_class=3, seed=1)
    again = load_dataset("cifar10", root=cifar10_root, max_per_class=3, seed=1)
    other = load_dataset("cifar10", root=cifar10_root, max_per_class=3, seed=2)
    assert torch.equal(sub.train.labels.bincount(), torch.full((10,), 3))
    assert torch.equal(sub.test.labels.bincount(), torch.full((10,), 2))  # only 2 per class exist
    assert torch.equal(sub.train.indices, again.train.indices)
    assert not torch.equal(sub.train.indices, other.train.indices)
    assert torch.equal(sub.train.indices, sub.train.indices.sort().values)
    assert torch.equal(sub.train.images, full.train.images[sub.train.indices])
    assert torch.equal(sub.train.labels, full.train.labels[sub.train.indices])


def test_max_images_spreads_over_classes_and_is_a_subset_of_a_larger_cap(cifar10_root):
    full = load_dataset("cifar10", root=cifar10_root)
    four = load_dataset("cifar10", root=cifar10_root, max_images=4)
    twelve = load_dataset("cifar10", root=cifar10_root, max_images=12)
    assert len(four.train) == len(four.test) == 4 and len(set(four.train.labels.tolist())) == 4
    counts = twelve.train.labels.bincount(minlength=10)
    assert len(twelve.train) == 12 and counts.max() - counts.min() == 1  # two of two classes, one of the rest
    assert set(four.train.indices.tolist()) <= set(twelve.train.indices.tolist())
    assert torch.equal(four.train.images, full.train.images[four.train.indices])
    capped = load_dataset("cifar10", root=cifar10_root, max_per_class=1, max_images=30)
    assert len(capped.train) == 10 and torch.equal(capped.train.labels.bincount(), torch.ones(10, dtype=torch.long))
    with pytest.raises(DataError, match="max_images=0"):
        load_dataset("cifar10", root=cifar10_root, max_images=0)


def test_sample_is_a_seeded_subset_in_split_order(cifar10_root):
    test = load_dataset("cifar10", root=cifar10_root).test
    part = test.sample(5, seed=0)
    assert len(part) == 5 and torch.equal(part.indices, part.indices.sort().values)
    rows = torch.nonzero(torch.isin(test.indices, part.indices)).flatten()
    assert torch.equal(part.images, test.images[rows]) and torch.equal(part.labels, test.labels[rows])
    assert torch.equal(test.sample(5, seed=0).indices, part.indices)
    assert not torch.equal(test.sample(5, seed=1).indices, part.indices)
    assert test.sample(None) is test and test.sample(len(test) + 1) is test
    with pytest.raises(DataError, match="positive integer"):
        test.sample(0)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "name, archive, folder",
    [
        ("cifar10", "cifar-10-python.tar.gz", ""),
        ("mnist", "train-images-idx3-ubyte.gz", "MNIST/raw"),
        ("imagenette", "imagenette2-160.tgz", ""),
    ],
)
def test_missing_data_names_archive_folder_and_download(tmp_path, name, archive, folder):
    with pytest.raises(DataError) as info:
        load_dataset(name, root=tmp_path)
    message = str(info.value)
    assert archive in message and str(tmp_path / folder) in message and "download: true" in message


def test_failed_download_is_a_data_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)  # torchvision's only way out
    with pytest.raises(DataError, match=r"download failed.*cifar-10-python\.tar\.gz"):
        load_dataset("cifar10", root=tmp_path, download=True)


def test_truncated_cifar_batch_names_the_file(cifar10_root, tmp_path):
    root = shutil.copytree(cifar10_root, tmp_path / "c")
    batch = root / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(DataError, match=f"{batch}: corrupt or truncated"):
        load_dataset("cifar10", root=root)


def test_truncated_mnist_file_names_the_file(mnist_root, tmp_path):
    root = shutil.copytree(mnist_root, tmp_path / "m")
    images = root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:1000])
    with pytest.raises(DataError, match=f"{images}: corrupt or truncated"):
        load_dataset("mnist", root=root)


def test_imagenette_missing_class_names_folder(imagenette_root, tmp_path):
    root = shutil.copytree(imagenette_root, tmp_path / "i")
    train = root / "imagenette2-160" / "train"
    shutil.rmtree(train / "n03028079")
    with pytest.raises(DataError, match=f"{train}: class folders n03028079 are missing"):
        load_dataset("imagenette", root=root)


def test_imagefolder_empty_split_and_bad_image(imagefolder_root, tmp_path):
    root = shutil.copytree(imagefolder_root, tmp_path / "f")
    shutil.rmtree(root / "test")
    (root / "test").mkdir()
    with pytest.raises(DataError, match=f"{root / 'test'}: empty split"):
        load_dataset("imagefolder", root=root)
    shutil.rmtree(root / "test")
    shutil.copytree(imagefolder_root / "test", root / "test")
    broken = sorted((root / "train" / "square").iterdir())[0]
    broken.write_bytes(b"not a png")
    with pytest.raises(DataError, match=f"{broken}: not a readable image"):
        load_dataset("imagefolder", root=root)


def test_bad_arguments_are_data_errors(imagefolder_root):
    with pytest.raises(DataError, match="unknown dataset 'cifar11'"):
        load_dataset("cifar11")
    with pytest.raises(DataError, match="channels=2"):
        load_dataset("imagefolder", root=imagefolder_root, channels=2)
    with pytest.raises(DataError, match="applies to imagenette only"):
        load_dataset("imagefolder", root=imagefolder_root, variant="160px")


# ---------------------------------------------------------------- Batches


def _imageset(count=10, channels=3, size=8, seed=0):
    images = torch.randint(1, 256, (count, channels, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return ImageSet(images=images, labels=torch.arange(count), indices=torch.arange(count))


def _slow_crop_flip(image, row, col, flip, pad=4):
    """One image at a time: zero canvas, paste, slice, mirror."""
    channels, height, width = image.shape
    canvas = torch.zeros((channels, height + 2 * pad, width + 2 * pad), dtype=image.dtype)
    canvas[:, pad : pad + height, pad : pad + width] = image
    crop = canvas[:, row : row + height, col : col + width]
    return crop.flip(-1) if flip else crop


def test_crop_flip_equals_per_image_shift_with_zero_padding():
    images = _imageset(count=40, size=6).images
    generator = torch.Generator().manual_seed(3)
    shifts = torch.randint(0, 9, (40, 2), generator=generator)
    flips = torch.rand(40, generator=generator) < 0.5
    fast = crop_flip(images, shifts, flips)
    for i in range(40):
        assert torch.equal(fast[i], _slow_crop_flip(images[i], *shifts[i].tolist(), bool(flips[i])))


def test_batches_shapes_and_length():
    batches = Batches(_imageset(count=10), batch_size=4, mean=(0.5,) * 3, std=(0.25,) * 3)
    sizes = [len(y) for _, y in batches]
    assert len(batches) == 3 and sizes == [4, 4, 2]
    x, y = next(iter(batches))
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape == (4, 3, 8, 8)
    assert torch.equal(y, torch.arange(4))  # shuffle=False keeps the stored order
    dropped = Batches(_imageset(count=10), batch_size=4, mean=(0.5,) * 3, std=(0.25,) * 3, drop_last=True)
    assert len(dropped) == 2 and [len(y) for _, y in dropped] == [4, 4]
    last = Batches(_imageset(), batch_size=4, mean=(0.5,) * 3, std=(0.25,) * 3, channels_last=True)
    assert next(iter(last))[0].is_contiguous(memory_format=torch.channels_last)


def test_batches_normalise_to_zero_mean_unit_std():
    data = load_dataset("cifar10-mini", max_per_class=20)
    batches = Batches(data.train, batch_size=64, mean=data.mean, std=data.std)
    x = torch.cat([x for x, _ in batches]).double()
    assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(x.std(dim=(0, 2, 3), correction=0), torch.ones(3, dtype=torch.float64), atol=1e-5)


def test_augmentation_keeps_each_label_with_its_image():
    labels = torch.arange(50) % 10
    images = (20 * (labels + 1)).view(-1, 1, 1, 1).expand(-1, 3, 8, 8).to(torch.uint8).contiguous()
    imageset = ImageSet(images=images, labels=labels, indices=torch.arange(50))
    batches = Batches(imageset, batch_size=16, mean=(0.0,) * 3, std=(1.0,) * 3, shuffle=True, augment=True)
    for x, y in batches:
        pixels = (x * 255).round()
        assert torch.equal(pixels.amax(dim=(1, 2, 3)), 20.0 * (y + 1))
        assert set(pixels.unique().tolist()) <= {0.0} | set((20.0 * (y + 1)).tolist())  # pad is black


def test_augmented_batches_are_crops_of_their_source_images():
    imageset = _imageset(count=12, size=6)
    batches = Batches(imageset, batch_size=5, mean=(0.0,) * 3, std=(1.0,) * 3, shuffle=True, augment=True, seed=4)
    for x, y in batches:
        for image, index in zip((x * 255).round().to(torch.uint8), y.tolist()):
            candidates = [_slow_crop_flip(imageset.images[index], r, c, f) for r in range(9) for c in range(9) for f in (False, True)]
            assert any(torch.equal(image, candidate) for candidate in candidates)


def test_order_and_augmentation_reproduce_per_seed_and_epoch():
    def epochs(seed, start=0, count=3):
        batches = Batches(_imageset(count=20), batch_size=7, mean=(0.5,) * 3, std=(0.25,) * 3, shuffle=True, augment=True, seed=seed)
        batches.set_epoch(start)
        return [[(x.clone(), y.clone()) for x, y in batches] for _ in range(count)]

    def same(a, b):
        return all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))

    run = epochs(seed=0)
    assert all(same(a, b) for a, b in zip(run, epochs(seed=0)))
    assert not same(run[0], run[1])  # a new permutation every epoch
    assert same(epochs(seed=0, start=2, count=1)[0], run[2])  # resume at epoch 2
    assert not same(epochs(seed=1, count=1)[0], run[0])


def test_no_two_seeds_share_an_epoch_order_or_augmentation():
    """Streams are keyed by (seed, epoch): with the old `seed + epoch` key, seed s at epoch e + 1
    replayed seed s + 1 at epoch e (order, crops and flips); over 5 seeds × 6 epochs every
    epoch's order must be its own, and so must its augmentation."""
    images = _imageset(count=40, size=4)
    orders, views = {}, {}
    for seed in range(5):
        batches = Batches(images, batch_size=40, mean=(0.0,) * 3, std=(1.0,) * 3, shuffle=True, augment=True, seed=seed)
        for epoch in range(6):
            batches.set_epoch(epoch)
            (x, y), = list(batches)
            orders[seed, epoch] = tuple(y.tolist())
            views[seed, epoch] = x[y.argsort()]  # the augmented view of each image, in image order
    assert len(set(orders.values())) == len(orders), "two (seed, epoch) pairs drew the same order"
    keys = list(views)
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            assert not torch.equal(views[a], views[b]), f"{a} and {b} drew the same crops and flips"
    assert orders[0, 1] != orders[1, 0] and orders[1, 2] != orders[2, 1]  # the old collision


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batches_on_cuda_match_cpu_and_are_channels_last():
    kwargs = dict(batch_size=8, mean=(0.5,) * 3, std=(0.25,) * 3, shuffle=True, augment=True, seed=5)
    cpu = list(Batches(_imageset(count=20), device="cpu", **kwargs))
    gpu = list(Batches(_imageset(count=20), device="cuda", **kwargs))
    for (xc, yc), (xg, yg) in zip(cpu, gpu):
        assert xg.is_cuda and xg.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(yc, yg.cpu()) and torch.allclose(xc, xg.cpu())


# ---------------------------------------------------------------- cifar10-mini


@pytest.fixture(scope="module")
def mini():
    return load_dataset("cifar10-mini")


def test_cifar10_mini_is_balanced_32px_rgb(mini):
    assert mini.num_classes == 10 and mini.classes[0] == "airplane"
    assert mini.train.images.shape == (5000, 3, 32, 32) and mini.test.images.shape == (1000, 3, 32, 32)
    assert torch.equal(mini.train.labels.bincount(), torch.full((10,), 500))
    assert torch.equal(mini.test.labels.bincount(), torch.full((10,), 100))
    assert (REPO_DATA / ARCHIVE).stat().st_size <= 3 * 1024 * 1024


def test_cifar10_mini_holds_original_jpegs_and_provenance(mini):
    with tarfile.open(REPO_DATA / ARCHIVE, "r:gz") as tar:
        manifest = json.load(tar.extractfile("cifar10-mini/MANIFEST.json"))
        jpeg = tar.extractfile("cifar10-mini/test/bird/0003.jpg").read()
    assert manifest["source_sha256"].startswith("58c58e3a") and manifest["per_class"] == {"train": 500, "test": 100}
    assert jpeg[:2] == b"\xff\xd8"  # JPEG start-of-image: stored as is, not re-encoded
    pixels = np.asarray(PIL.Image.open(io.BytesIO(jpeg)).convert("RGB"))
    position = 2 * 100 + 3  # bird is class 2; files sorted by name within a class
    assert torch.equal(mini.test.images[position], torch.from_numpy(pixels.copy()).permute(2, 0, 1))
    assert mini.test.labels[position] == 2 and mini.test.indices[position] == position


def test_cifar10_mini_missing_or_truncated_archive(tmp_path):
    with pytest.raises(DataError, match=r"missing; rebuild it with `python scripts/build_cifar10_mini\.py"):
        load_dataset("cifar10-mini", root=tmp_path)
    (tmp_path / ARCHIVE).write_bytes((REPO_DATA / ARCHIVE).read_bytes()[:100_000])
    with pytest.raises(DataError, match=f"{tmp_path / ARCHIVE}: truncated or corrupt archive"):
        load_dataset("cifar10-mini", root=tmp_path)
