"""Data on a machine without internet: the README's two layouts (an image folder via
`dataset: imagefolder` + `dataset_root`, and the torchvision archives extracted under `data_root`)
load from local files alone, and a missing folder is a clear error naming it."""
import socket
from pathlib import Path

import pytest
import yaml
from conftest import SHAPES, write_paper_data

from flowprobe.config import load_config
from flowprobe.data import load_dataset
from flowprobe.errors import DataError
from flowprobe.workflow import run_data

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def archives_root(tmp_path_factory):
    """One data_root holding the extracted CIFAR-10, MNIST and ImageNette (160px, 320px) archives."""
    root = tmp_path_factory.mktemp("data_root")
    write_paper_data(root)
    return root


def test_every_paper_run_loads_from_the_extracted_archives(archives_root, offline):
    config = load_config({**yaml.safe_load((ROOT / "config.yaml").read_text()), "download": False})
    for name, run in config["runs"].items():
        data = run_data(run, str(archives_root), download=False, max_per_class=1)
        channels = run["channels"] or SHAPES[run["dataset"]][0]
        assert data.train.images.shape[1:] == (channels, run["resolution"], run["resolution"]), name
        assert data.num_classes == 10 and len(data.train) == len(data.test) == 10, name


def test_imagefolder_run_reads_its_dataset_root_not_data_root(imagefolder_root, tmp_path, offline):
    raw = {"runs": {"mine": {"model": "VGG16", "dataset": "imagefolder", "dataset_root": str(imagefolder_root)}}}
    run = load_config(raw)["runs"]["mine"]
    data = run_data(run, str(tmp_path / "empty"), download=False)
    assert data.classes == ["circle", "cross", "square"] and data.train.images.shape[1:] == (3, 32, 32)


def test_missing_image_folder_names_the_folder_and_the_layout(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("imagefolder", root=tmp_path / "nowhere")
    message = str(info.value)
    assert f"{tmp_path / 'nowhere' / 'train'}: folder not found" in message
    assert "train/<class>/*.jpg" in message and "test/<class>/*.jpg" in message


@pytest.mark.parametrize("name, archive", [("cifar10", "cifar-10-python.tar.gz"), ("imagenette", "imagenette2-160.tgz")])
def test_missing_archive_offline_names_archive_and_folder(tmp_path, offline, name, archive):
    with pytest.raises(DataError) as info:
        load_dataset(name, root=tmp_path, download=False)
    assert archive in str(info.value) and str(tmp_path) in str(info.value)
