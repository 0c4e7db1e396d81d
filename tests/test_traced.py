"""Traced models (torchvision:NAME, import:module:factory): probe points, pathways and receptive
fields read off the fx graph, checked against hand/rfa-toolbox numbers, the zoo's own tracer,
gradient support, and a real dump and ablation."""

from functools import lru_cache

import h5py
import pytest
import torch
from torch import nn

from gradient_support import measured_fields, positive_weights
from flowprobe.activations import dump_activations
from flowprobe.analysis.ablation import ablation_table, pathway_ends
from flowprobe.analysis.cka import cka_pathway_table
from flowprobe.data import Batches, load_dataset
from flowprobe.errors import ModelSpecError
from flowprobe.models import build_model, check_spec, probe_points, receptive_fields, taps
from flowprobe.models.mpnet import build_mpnet
from flowprobe.models.resnet import build_resnet

MODELS = ["resnet18", "googlenet", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny"]


@lru_cache(maxsize=None)
def traced(name: str, size: int = 32, **options):
    torch.manual_seed(0)
    return build_model(f"torchvision:{name}", 10, input_size=size, **options).eval()


def table(name: str, size: int = 32):
    return receptive_fields(traced(name, size), size).set_index("probe_point")


@pytest.mark.parametrize("name", MODELS)
def test_trace_points_and_forward(name):
    model = traced(name)
    points = probe_points(model)
    assert len(points) == len(taps(model)) >= 10
    assert len({p.name for p in points}) == len(points)
    assert all(p.shape is not None and len(p.shape) in (1, 3) for p in points)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    stages = [p.stage for p in points if p.pathway == "trunk"]
    assert stages == sorted(stages), "stages follow the resolution down the trunk"


@pytest.mark.parametrize("name, blocks, labels", [
    ("resnet18", 8, {"branch", "skip"}),
    ("googlenet", 9, {"p0", "p1", "p2", "p3"}),
    ("mobilenet_v3_small", 6, {"branch", "skip"}),
    ("efficientnet_b0", 9, {"branch", "skip"}),
    ("convnext_tiny", 18, {"branch", "skip"}),
])
def test_pathways_from_forks_and_joins(name, blocks, labels):
    """Residual blocks: branch + identity/projection skip; Inception: one pathway per branch.
    Squeeze-excitation gates are not joins (mobilenet_v3 / efficientnet have SE in every block)."""
    ends = pathway_ends(traced(name))
    assert len(ends) == blocks
    assert {label for block in ends.values() for label in block} == labels


def test_resnet18_layout():
    t = table("resnet18")
    assert t.loc["layer1.0.conv1", ["stage", "block", "pathway", "position"]].tolist() == [1, 0, "branch", 0]
    assert t.loc["layer1.0.add.skip", "kind"] == "identity"
    assert t.loc["layer2.0.downsample.0", "pathway"] == "skip"  # projection shortcut
    assert t.loc["layer4.1.add", ["stage", "block", "pathway"]].tolist() == [4, 1, "trunk"]
    assert "fc" not in t.index, "the logits are not a probe point"


def test_resnet18_matches_rfa_toolbox():
    """rfa-toolbox (graphs.compute_receptive_field_sizes: r += (k-1)*m, m *= s, min/max over paths)
    on torchvision's resnet18: max field 435 at layer4, min 11 (the identity skips keep the
    max-pool output's field); layer by layer as written here."""
    t = table("resnet18")
    expected = {"conv1": (7, 7), "layer1.0.conv1": (19, 19), "layer1.0.add": (27, 11), "layer1.1.add": (43, 11),
                "layer2.0.conv1": (51, 19), "layer2.0.add": (67, 11), "layer2.1.add": (99, 11),
                "layer3.0.add": (147, 11), "layer3.1.add": (211, 11), "layer4.0.conv2": (307, 107),
                "layer4.0.add": (307, 11), "layer4.1.conv2": (435, 139), "layer4.1.add": (435, 11)}
    for name, (big, small) in expected.items():
        assert tuple(t.loc[name, ["receptive_field", "receptive_field_min"]]) == (big, small), name
    assert t.loc["layer4.1.add", "jump"] == 32


def test_vgg16_matches_rfa_toolbox():
    """rfa-toolbox's numbers for torchvision's vgg16 convs (3x3/1 convs, 2x2/2 pools)."""
    t = table("vgg16")
    convs = t[t.kind == "conv"]
    assert convs.receptive_field.tolist() == [3, 5, 10, 14, 24, 32, 40, 60, 76, 92, 132, 164, 196]
    assert convs.jump.tolist() == [1, 1, 2, 2, 4, 4, 4, 8, 8, 8, 16, 16, 16]
    # conv7 (features.14) is the border layer at 32 px, input field 32, as for the zoo's VGG16
    assert t.index[t.border_layer & (t.pathway == "trunk")][0] == "features.14"


def zoo_resnet18(num_classes, input_size, **kw):
    return build_resnet("ResNet18", num_classes, input_size=input_size, **kw)


@pytest.mark.parametrize("spec, factory, kw", [
    ("VGG16", "flowprobe.models.vgg:build_vgg16", dict(widths=(2, 2, 2, 2, 2))),
    ("ResNet18", "test_traced:zoo_resnet18", dict(widths=(2, 2, 2, 2))),
])
def test_agrees_with_the_zoo_tracer(spec, factory, kw):
    """The zoo's build-time fields and the graph's fields agree point for point (zoo models
    traced as an import: spec; their hand-placed taps are traced through, the graph finds its own).
    The zoo taps a ResNet block's two convs and its add; the graph also taps the identity skips."""
    zoo = receptive_fields(build_model(spec, 10, input_size=32, **kw), 32)
    graph = receptive_fields(build_model(f"import:{factory}", 10, input_size=32, **kw), 32).set_index("probe_point")
    same = {"VGG16": lambda n: n.endswith(".conv") or n.endswith(".fc"),
            "ResNet18": lambda n: n.endswith(".conv") or n.endswith(".add")}[spec]
    graph = graph[[same(n) for n in graph.index]]
    columns = ["receptive_field", "jump", "receptive_field_min"]
    assert graph[columns].values.tolist() == zoo[columns].values.tolist()


@pytest.mark.parametrize("name", ["resnet18", "googlenet"])
def test_receptive_field_matches_gradient_support(name):
    """As tests/test_receptive_fields.py for the zoo: field = width of the input region a
    centre unit depends on; jump = shift of that region per unit step."""
    size = 64
    torch.manual_seed(0)
    model = build_model(f"torchvision:{name}", 10, input_size=size).eval()
    positive_weights(model)
    points = [p for p in probe_points(model) if len(p.shape) == 3 and p.receptive_field + 4 * p.jump <= size]
    assert len(points) >= 4
    measured = measured_fields(model, points, size)
    for p in points:
        assert measured[p.name] == (p.receptive_field, p.jump), p.name


def test_channels_last_points_are_tapped_as_nchw():
    """ConvNeXt's linear layers run on [N, H, W, C]; their taps see [N, C, H, W]."""
    points = {p.name: p for p in probe_points(traced("convnext_tiny"))}
    assert points["features.1.0.block.3"].shape == (384, 8, 8)
    assert points["features.1.0.block.0"].shape == (96, 8, 8)


def test_selection_by_name_patterns():
    model = build_model("torchvision:resnet18", 10, probe_points={"include": ["layer*"], "exclude": ["*.skip"]})
    names = [t.point.name for t in taps(model)]
    assert names[0] == "layer1.0.conv1" and not any(n.endswith(".skip") for n in names)
    with pytest.raises(ModelSpecError, match="select no probe point"):
        build_model("torchvision:resnet18", 10, probe_points={"include": ["nothing*"]})


class _Branchy(nn.Module):
    """A user model whose forward branches on a tensor: not traceable as it stands."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.gate = _DataDependent()
        self.head = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.head(self.gate(torch.relu(self.conv(x))).mean((2, 3)))


class _DataDependent(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


def branchy(num_classes=10):
    return _Branchy(num_classes)


def test_untraceable_model_names_the_module_and_the_option():
    with pytest.raises(ModelSpecError, match=r"module 'gate'.*leaf_modules"):
        build_model("import:test_traced:branchy", 10)
    model = build_model("import:test_traced:branchy", 10, leaf_modules=["_DataDependent"])
    assert [t.point.name for t in taps(model)] == ["conv"]


@pytest.mark.parametrize("spec, message", [
    ("torchvision:resnet19", "no classification model 'resnet19'"),
    ("import:no_such_package.models:build", "cannot import no_such_package.models"),
    ("import:flowprobe.models:nothing", "has no callable 'nothing'"),
])
def test_bad_specs_fail_early(spec, message):
    with pytest.raises(ModelSpecError, match=message):
        check_spec(spec)


def test_bad_option_names_the_builder():
    with pytest.raises(ModelSpecError, match="keyword arguments of the builder"):
        build_model("torchvision:resnet18", 10, no_such_option=1)


def test_local_weights_are_loaded(tmp_path):
    source = traced("resnet18")
    path = tmp_path / "weights.pt"
    torch.save({k: v for k, v in source.state_dict().items()}, path)
    torch.manual_seed(1)
    loaded = build_model("torchvision:resnet18", 10, weights=str(path)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))
    with pytest.raises(ModelSpecError, match="do not fit the model"):
        build_model("torchvision:resnet18", 7, weights=str(path))


def test_dump_cka_and_ablation_on_a_traced_model(tmp_path):
    data = load_dataset("cifar10-mini", max_per_class=1)
    model = traced("resnet18")
    path = tmp_path / "activations.h5"
    attrs = {"config": {"model": "torchvision:resnet18"}, "seed": 0, "resolution": 32, "test_accuracy": 0.1}
    dump_activations(model, data, path, attrs=attrs, batch_size=5, device="cpu", progress=False)
    with h5py.File(path) as h5:
        group = h5["layers/layer2.1.add.skip"]
        assert group.attrs["pathway"] == "skip" and group.attrs["kind"] == "identity"
        assert h5["layers/layer2.0.conv1/test"].shape == (10, 128 * 16)

    heat = cka_pathway_table(path, batch_size=5)  # default pathways: branch and skip of the last block
    assert set(zip(heat.layer_a, heat.layer_b)) == {("layer4.1.conv1", "layer4.1.add.skip"),
                                                    ("layer4.1.conv2", "layer4.1.add.skip")}
    assert heat.cka.between(0, 1).all()

    def batches():
        return Batches(data.test, batch_size=5, mean=data.mean, std=data.std, device="cpu")

    result = ablation_table(model, batches, scope="each")
    assert len(result) == 1 + 8 * 2
    assert set(result.pathway) == {"none", "branch", "skip"}
    assert not any(t.ablate for t in taps(model))


def test_checkpoint_of_another_model_is_refused(tmp_path):
    from flowprobe.imported import checkpoint_state

    path = tmp_path / "model.pt"
    torch.save({"state_dict": {}, "run": {"model": "VGG16"}}, path)
    with pytest.raises(ModelSpecError, match="holds a VGG16 but the run's model is torchvision:resnet18"):
        checkpoint_state(path, "torchvision:resnet18")
    with pytest.raises(ModelSpecError, match="does not exist"):
        checkpoint_state(tmp_path / "missing.pt", "VGG16")


class _Functional(nn.Module):
    """Functional pools and a dilated conv: windows read from call arguments."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=2, dilation=2)
        self.c3 = nn.Conv2d(4, 4, 5, padding=2)
        self.fc = nn.Linear(4 * 4 * 4, num_classes)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.c1(x)), 2)
        x = torch.nn.functional.avg_pool2d(torch.relu(self.c2(x)), kernel_size=3, stride=2, padding=1)
        return self.fc(torch.relu(self.c3(x)).flatten(1))


def functional_net(num_classes):
    return _Functional(num_classes)


def test_functional_windows_by_hand():
    # c1 3 (j1); max pool 2/2 -> 4 (j2); c2 k_eff 5 -> 4 + 4*2 = 12; avg pool 3/2 -> 16 (j4);
    # c3 5x5 -> 16 + 4*4 = 32 (the logits unit fc is not a probe point)
    t = receptive_fields(build_model("import:test_traced:functional_net", 10, input_size=16), 16)
    assert t[["probe_point", "receptive_field", "input_receptive_field", "jump"]].values.tolist() == [
        ["c1", 3, 1, 1], ["c2", 12, 4, 2], ["c3", 32, 16, 4]]


@pytest.mark.parametrize("name", ["resnet18", "googlenet", "shufflenet_v2_x0_5"])
def test_every_conv_is_a_probe_point(name):
    """Also through ShuffleNet's channel split (chunk) and shuffle (a 5-D view and back)."""
    import torchvision

    from flowprobe.models.traced import BUILDER_DEFAULTS

    original = torchvision.models.get_model(name, num_classes=10, **BUILDER_DEFAULTS.get(name, {}))
    points = probe_points(traced(name))
    assert sum(p.kind == "conv" for p in points) == sum(isinstance(m, nn.Conv2d) for m in original.modules())
    assert max(p.receptive_field for p in points if p.kind == "conv") > 100  # fields grow to the last conv


def zoo_mpnet(num_classes, input_size, **kw):
    return build_mpnet("MPNet1(1:3x3,2:5x5d2)", num_classes, input_size=input_size, **kw)


def test_agrees_with_the_zoo_on_a_multipath_net():
    """MPNet traced from its module: the same fields (largest and smallest) at every point, and
    its two pathways found as p0/p1 (a one-conv 3x3 pathway is not a skip: it adds context)."""
    zoo = receptive_fields(build_model("MPNet1(1:3x3,2:5x5d2)", 10, input_size=32, widths=(2, 2, 2, 2)), 32)
    graph = receptive_fields(build_model("import:test_traced:zoo_mpnet", 10, input_size=32, widths=(2, 2, 2, 2)), 32)
    columns = ["receptive_field", "jump", "receptive_field_min", "input_receptive_field", "block", "position"]
    assert graph[columns].values.tolist() == zoo[columns].values.tolist()
    labels = {"min": "p0", "max": "p1", "trunk": "trunk"}
    assert graph.pathway.tolist() == zoo.pathway.map(labels).tolist()
    assert (graph.stage == zoo.stage + 1).all()  # the graph counts the stem's resolution as stage 0
