"""activations.h5: the data contract, values equal to a direct forward pass, atomic writes."""
import json

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flowprobe import activations as act
from flowprobe.activations import dump_activations, estimate_bytes
from flowprobe.data import Batches, load_dataset
from flowprobe.errors import ActivationFileError, FlowprobeError
from flowprobe.h5io import open_activations, point_frame, probe_point_names
from flowprobe.models import build_model, probe_points, taps

ATTRS = {"config": {"model": "x"}, "seed": 3, "resolution": 32, "test_accuracy": 0.5}


@pytest.fixture(scope="module")
def tiny():
    return load_dataset("cifar10-mini", max_per_class=3)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("MPNet1(1:3x3, 2:5x5)", 10, widths=(4, 4, 8, 8)).eval()


@pytest.fixture(scope="module")
def dumped(tmp_path_factory, model, tiny):
    path = tmp_path_factory.mktemp("dump") / "activations.h5"
    dump_activations(model, tiny, path, attrs=ATTRS, batch_size=7, device="cpu", progress=False)
    return path


def test_contract(dumped, model, tiny):
    with open_activations(dumped) as h5:
        names = probe_point_names(h5)
        assert names == [p.name for p in probe_points(model)]
        assert h5["labels/train"].dtype == np.int64 and h5["labels/train"].shape == (30,)
        assert np.array_equal(h5["labels/test"][...], tiny.test.labels.numpy())
        assert np.array_equal(h5["indices/train"][...], tiny.train.indices.numpy())
        assert h5["output/test"].shape == (30, 10)
        assert h5.attrs["seed"] == 3 and json.loads(h5.attrs["config"]) == {"model": "x"}
        assert h5.attrs["dataset"] == "cifar10-mini" and bool(h5.attrs["complete"])
        frame = point_frame(h5)
        assert list(frame["probe_point"]) == names
        assert set(frame["pathway"]) == {"trunk", "min", "max"}
        for p in probe_points(model):
            group = h5[f"layers/{p.name}"]
            c = p.shape[0]
            assert group["train"].shape == (30, c * 16)
            assert list(group.attrs["shape"]) == list(p.shape)
            assert list(group.attrs["stored_shape"]) == [c, 4, 4]
            assert group.attrs["receptive_field"] == p.receptive_field


def test_features_equal_a_direct_forward_pass(dumped, model, tiny):
    """Independent path: hooks on the taps, plain average pooling to 4×4, no Batches."""
    x = (tiny.test.images.float() / 255 - torch.tensor(tiny.mean).view(1, 3, 1, 1)) / torch.tensor(tiny.std).view(1, 3, 1, 1)
    seen = {}
    hooks = [t.register_forward_hook(lambda m, i, o: seen.__setitem__(m.point.name, o)) for t in taps(model)]
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    with h5py.File(dumped) as h5:
        for name, out in seen.items():
            h, w = out.shape[-2:]
            expected = F.avg_pool2d(out, (h // 4, w // 4)).flatten(1) if h >= 4 else F.adaptive_avg_pool2d(out, 4).flatten(1)
            assert np.allclose(h5[f"layers/{name}/test"][...], expected.numpy(), atol=1e-5), name
        assert np.allclose(h5["output/test"][...], logits.numpy(), atol=1e-5)


def test_dump_is_deterministic_and_in_eval_mode(tmp_path, model, tiny, dumped):
    model.train()  # the dump must switch to eval itself
    dump_activations(model, tiny, tmp_path / "again.h5", attrs=ATTRS, batch_size=11, device="cpu", progress=False)
    with h5py.File(dumped) as a, h5py.File(tmp_path / "again.h5") as b:
        for name in probe_point_names(a):
            assert np.allclose(a[f"layers/{name}/train"][...], b[f"layers/{name}/train"][...], atol=1e-6)


def test_interrupted_dump_leaves_no_trusted_file(tmp_path, model, tiny, monkeypatch):
    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(act, "_dump_split", explode)
    with pytest.raises(KeyboardInterrupt):
        dump_activations(model, tiny, tmp_path / "activations.h5", attrs=ATTRS, device="cpu", progress=False)
    assert not (tmp_path / "activations.h5").exists()
    leftover = tmp_path / "activations.h5.incomplete"
    assert leftover.exists()
    with pytest.raises(ActivationFileError, match="interrupted"):
        open_activations(leftover)


def test_corrupt_or_foreign_files_are_named(tmp_path, dumped):
    bad = tmp_path / "truncated.h5"
    bad.write_bytes(dumped.read_bytes()[:2000])
    with pytest.raises(ActivationFileError, match="truncated.h5"):
        open_activations(bad)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(dumped) as src, h5py.File(foreign, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        src.copy("labels", dst)
    with pytest.raises(ActivationFileError, match="/output/train"):
        open_activations(foreign)


def test_disk_estimate_and_early_failure(tmp_path, model, tiny, monkeypatch):
    expected = 4 * 60 * (sum(p.shape[0] * 16 for p in probe_points(model)) + 10)
    assert estimate_bytes(model, tiny, "avgpool4") == expected

    class Full:
        free = 1000

    monkeypatch.setattr(act.shutil, "disk_usage", lambda path: Full)
    with pytest.raises(FlowprobeError, match="needs about .* GB"):
        dump_activations(model, tiny, tmp_path / "x.h5", attrs=ATTRS, device="cpu", progress=False)
    assert not list(tmp_path.iterdir())
