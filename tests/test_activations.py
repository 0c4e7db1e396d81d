"""activations.h5: the data contract, values equal to a direct forward pass, atomic writes."""
import json

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flowprobe import activations as act
from flowprobe.activations import dump_activations, estimate_bytes, prebn_modules
from flowprobe.data import Batches, load_dataset
from flowprobe.errors import ActivationFileError, FlowprobeError
from flowprobe.h5io import features, open_activations, point_frame, prebn_point_names, probe_point_names
from flowprobe.models import build_model, probe_points, taps
from flowprobe.models.densenet import DenseLayer
from flowprobe.models.resnet import BasicBlock
from flowprobe.models.units import ConvUnit, LinearUnit

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
    dump_activations(model, tiny, path, attrs=ATTRS, dtype="float32", batch_size=7, device="cpu", progress=False)
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
    dump_activations(model, tiny, tmp_path / "again.h5", attrs=ATTRS, dtype="float32", batch_size=11, device="cpu", progress=False)
    with h5py.File(dumped) as a, h5py.File(tmp_path / "again.h5") as b:
        for name in probe_point_names(a):
            assert np.allclose(a[f"layers/{name}/train"][...], b[f"layers/{name}/train"][...], atol=1e-6)


def test_interrupted_dump_leaves_no_trusted_file(tmp_path, model, tiny, monkeypatch):
    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(act, "_dump_split", explode)
    with pytest.raises(KeyboardInterrupt):
        dump_activations(model, tiny, tmp_path / "activations.h5", attrs=ATTRS, dtype="float32", device="cpu", progress=False)
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
    values = sum(p.shape[0] * 16 for p in probe_points(model))
    pre = sum(p.shape[0] * 16 for p in probe_points(model) if p.kind != "add")  # the adds have no conv
    assert estimate_bytes(model, tiny, "avgpool4") == 60 * (4 * values + 4 * 10 + 16)
    assert estimate_bytes(model, tiny, "avgpool4", "float16", prebn=True) == 60 * (2 * (values + pre) + 4 * 10 + 16)

    class Full:
        free = 1000

    monkeypatch.setattr(act.shutil, "disk_usage", lambda path: Full)
    with pytest.raises(FlowprobeError, match="needs about .* GB"):
        dump_activations(model, tiny, tmp_path / "x.h5", attrs=ATTRS, dtype="float32", device="cpu", progress=False)
    assert not list(tmp_path.iterdir())


def normalised(data):
    mean, std = torch.tensor(data.mean).view(1, 3, 1, 1), torch.tensor(data.std).view(1, 3, 1, 1)
    return (data.test.images.float() / 255 - mean) / std


def recompute_before_bn(module, x):
    """(probe point, pre-BN output) of the units in `module`, recomputed from its input `x`
    with its own layers, written out per unit type."""
    if isinstance(module, (ConvUnit, LinearUnit)):
        return [(module.tap.point.name, module[0](x))]
    if isinstance(module, BasicBlock):  # the branch point: the branch's second conv, before BN and the add
        return [(module.branch_tap.point.name, module.conv(module.first(x)))]
    if isinstance(module, DenseLayer):  # bottleneck 1x1 conv; the new features: the 3x3 conv
        neck = module.bottleneck
        return [(neck.tap.point.name, neck.conv1(neck.relu1(neck.bn1(x)))),
                (module.new_tap.point.name, module.conv2(neck(x)))]
    if isinstance(module, torch.nn.Sequential) and hasattr(module, "pool") and hasattr(module, "tap"):
        return [(module.tap.point.name, module.conv(module.relu(module.bn(x))))]  # DenseNet transition
    return []


def unit_outputs_before_bn(model, x):
    """Independent path: each unit's input, through its own conv/fc (recompute_before_bn),
    then nearest neighbour to 4×4 by explicit indexing (source pixel floor(i·H/4))."""
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda m, i: inputs.__setitem__(m, i[0])) for m in model.modules()]
    with torch.no_grad():
        model(x)
        for h in hooks:
            h.remove()
        out = {}
        for module, given in inputs.items():
            for name, y in recompute_before_bn(module, given):
                if y.dim() == 4:
                    rows = (torch.arange(4) * y.shape[2]) // 4
                    cols = (torch.arange(4) * y.shape[3]) // 4
                    y = y[:, :, rows][:, :, :, cols]
                out[name] = y.flatten(1)
    return out


@pytest.mark.parametrize("spec, options", [
    ("MPNet1(1:3x3, 2:5x5)", {"widths": (4, 4, 8, 8)}),  # merges: no pre-BN output
    ("VGG16", {"widths": (2, 3, 4, 4, 4), "fc_width": 5}),  # 2×2 maps upsampled to 4×4, a linear unit
    ("ResNet18", {"widths": (2, 3, 4, 4)}),
    ("DenseNet18", {"growth_rate": 2, "init_features": 4}),
])
def test_prebn_maps_equal_an_independent_recomputation(tmp_path, tiny, spec, options):
    torch.manual_seed(1)
    net = build_model(spec, 10, **options).eval()
    path = tmp_path / "a.h5"
    dump_activations(net, tiny, path, attrs=ATTRS, dtype="float32", prebn=True, batch_size=8, device="cpu", progress=False)
    expected = unit_outputs_before_bn(net, normalised(tiny))
    with open_activations(path) as h5:
        names = prebn_point_names(h5)
        assert names == [p.name for p in probe_points(net) if p.name in expected]  # forward order
        assert set(names) == set(expected) and set(prebn_modules(net)) == set(expected)
        for name in names:
            stored = h5[f"prebn/{name}/test"][...]
            assert stored.shape == (30, int(np.prod(h5[f"prebn/{name}"].attrs["stored_shape"])))
            assert np.allclose(stored, expected[name].numpy(), atol=1e-5), name
        without = [p.name for p in probe_points(net) if p.name not in expected]
        assert all(f"prebn/{name}" not in h5 for name in without)
        # only merges (adds, concatenations) lack a conv of their own
        merges = [p.name for p in probe_points(net) if p.kind in ("add", "concat")]
        assert bool(h5.attrs["prebn"]) and without == merges


def test_float16_and_compressed_dumps_hold_the_same_features(tmp_path, model, tiny, dumped):
    half, packed = tmp_path / "half.h5", tmp_path / "packed.h5"
    dump_activations(model, tiny, half, attrs=ATTRS, dtype="float16", batch_size=7, device="cpu", progress=False)
    dump_activations(model, tiny, packed, attrs=ATTRS, dtype="float32", compression="gzip", batch_size=7, device="cpu", progress=False)
    with open_activations(dumped) as full, open_activations(half) as h16, open_activations(packed) as gz:
        assert h16.attrs["dtype"] == "float16" and full.attrs["dtype"] == "float32"
        for name in probe_point_names(full):
            reference = full[f"layers/{name}/train"][...]
            assert h16[f"layers/{name}/train"].dtype == np.float16
            upcast = features(h16, name, "train")
            assert upcast.dtype == np.float32  # readers never hand out float16
            assert np.allclose(upcast, reference, rtol=2**-10, atol=1e-6), name
            assert np.array_equal(features(gz, name, "train"), reference)
            assert gz[f"layers/{name}/train"].compression == "gzip"
            assert gz[f"layers/{name}/train"].chunks[1] == reference.shape[1]  # chunked by whole rows
            assert full[f"layers/{name}/train"].chunks is None  # uncompressed: contiguous
        assert h16["output/test"].dtype == np.float32


def test_float16_overflow_is_refused(tmp_path, tiny):
    torch.manual_seed(0)
    net = build_model("MPNet1(1:3x3, 2:5x5)", 10, widths=(4, 4, 8, 8)).eval()
    with torch.no_grad():
        net.stem.conv.weight.mul_(1e6)
    with pytest.raises(FlowprobeError, match="exceeds float16.*activations.dtype: float32"):
        dump_activations(net, tiny, tmp_path / "a.h5", attrs=ATTRS, dtype="float16", device="cpu", progress=False)
