"""The model zoo: spec grammar, shapes, probe-point order, parameter counts, one SGD step."""

import pytest
import torch
import torch.nn.functional as F

from flowprobe.errors import ModelSpecError
from flowprobe.models import (
    MODEL_FAMILIES, MPNetSpec, build_model, check_spec, parse_mpnet, probe_points, taps,
)


SMALL = {
    "VGG16": dict(widths=(4, 4, 8, 8, 8)),
    "ResNet18": dict(widths=(4, 4, 8, 8)),
    "ResNet34": dict(widths=(4, 4, 8, 8)),
    "DenseNet18": dict(growth_rate=4, init_features=8),
    "MPNet2(1:3x3,4:7x7)": dict(widths=(4, 4, 8, 8)),
    "MPNet1(1:3x3,2:5x5d2,1:1x1)": dict(widths=(4, 4, 8, 8), merge="concat"),
}
PAPER_MPNETS = ["MPNet2(1:3x3,4:7x7)", "MPNet2(2:3x3,2:7x7)", "MPNet2(1:3x3,2:7x7)",
                "MPNet2(8:3x3,8:3x3)", "MPNet4(8:3x3,1:7x7)"]


# --- grammar ---------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, canonical, pathways", [
    ("MPNet2(1:3x3,4:7x7)", "MPNet2(1:3x3,4:7x7)", [(1, 3, 1), (4, 7, 1)]),
    ("MPNet2( 1:3x3 , 4:7x7 )", "MPNet2(1:3x3,4:7x7)", [(1, 3, 1), (4, 7, 1)]),
    ("MPNet4(8:3x3,1:7x7)", "MPNet4(8:3x3,1:7x7)", [(8, 3, 1), (1, 7, 1)]),
    ("MPNet1(3:3x3d2)", "MPNet1(3:3x3d2)", [(3, 3, 2)]),
    ("MPNet3(1:3x3d1,2:5x5,1:1x1,2:3x3d3)", "MPNet3(1:3x3,2:5x5,1:1x1,2:3x3d3)",
     [(1, 3, 1), (2, 5, 1), (1, 1, 1), (2, 3, 3)]),
])
def test_parse_mpnet_round_trips(spec, canonical, pathways):
    parsed = parse_mpnet(spec)
    assert parsed.pathways == pathways
    assert str(parsed) == canonical
    assert parse_mpnet(str(parsed)) == parsed


@pytest.mark.parametrize("spec, problem", [
    ("MPNet2(0:3x3)", "depth 0"),
    ("MPNet(1:3x3)", "K, the blocks per stage, is required"),
    ("MPNet0(1:3x3)", "K (blocks per stage) must be >= 1"),
    ("MPNet2(1:2x2)", "even kernel 2"),
    ("MPNet2(1:3x5)", "non-square kernel 3x5"),
    ("MPNet2(1:3x3,wide)", "'wide'"),
    ("MPNet2(1:3x3d0)", "dilation 0"),
    ("MPNet2()", "at least one pathway"),
    ("MPNet2(1:3x3", "not of the form"),
])
def test_bad_mpnet_specs_name_problem_grammar_and_example(spec, problem):
    with pytest.raises(ModelSpecError) as err:
        parse_mpnet(spec)
    message = str(err.value)
    assert problem in message
    assert "MPNet{K}(n1:k1xk1, n2:k2xk2[, ...])" in message
    assert "e.g. MPNet2(1:3x3,4:7x7)" in message
    with pytest.raises(ModelSpecError):
        check_spec(spec)


def test_unknown_model_lists_the_families():
    with pytest.raises(ModelSpecError) as err:
        check_spec("vgg16")
    message = str(err.value)
    assert "case-sensitive" in message
    for name in ["VGG16", "ResNet18", "ResNet34", "DenseNet18", "AlainMLP", "MPNet{K}("]:
        assert name in message
    assert set(MODEL_FAMILIES) >= {"VGG16", "ResNet18", "ResNet34", "DenseNet18", "AlainMLP"}


def test_unknown_and_bad_options_are_spec_errors():
    with pytest.raises(ModelSpecError, match=r"has no option\(s\) \['span'\].*widths"):
        build_model("ResNet18", 10, span=3)
    with pytest.raises(ModelSpecError, match="merge='mul'"):
        build_model("MPNet1(1:3x3,1:5x5)", 10, merge="mul")
    with pytest.raises(ModelSpecError, match="widths"):
        build_model("MPNet1(1:3x3)", 10, widths=(4, 4))
    with pytest.raises(ModelSpecError, match="num_classes"):
        build_model("VGG16", 0)
    with pytest.raises(ModelSpecError, match="input_size"):
        build_model("VGG16", 10, input_size=16)  # five 2x2 max pools need >= 32 px


@pytest.mark.parametrize("spec, labels", [
    ("MPNet1(1:3x3,4:7x7)", ["min", "max"]),
    ("MPNet1(4:7x7,1:3x3)", ["max", "min"]),
    ("MPNet1(8:3x3,8:3x3)", ["p0", "p1"]),
    ("MPNet1(2:3x3,4:3x3)", ["p0", "p1"]),
    ("MPNet1(1:3x3)", ["p0"]),
    ("MPNet1(1:3x3,1:5x5,1:7x7)", ["p0", "p1", "p2"]),
])
def test_pathway_labels(spec, labels):
    assert parse_mpnet(spec).labels() == labels
    model = build_model(spec, 10, widths=(2, 2, 2, 2))
    assert list(model.stages[0][0].pathways) == labels
    assert {p.pathway for p in probe_points(model)} - {"trunk"} == set(labels)


# --- shapes and probe points -------------------------------------------------------------------

@pytest.mark.parametrize("spec", list(SMALL))
@pytest.mark.parametrize("size", [32, 64, 160])
def test_output_shapes(spec, size):
    model = build_model(spec, 7, input_size=size, **SMALL[spec]).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, 7)
    assert model.spec == spec and model.input_size == size and model.in_channels == 3


@pytest.mark.parametrize("size", [28, 32])
def test_mlp_on_grayscale(size):
    model = build_model("AlainMLP", 10, in_channels=1, input_size=size, span=4, depth=2).eval()
    with torch.no_grad():
        assert model(torch.randn(3, 1, size, size)).shape == (3, 10)
    names = [p.name for p in probe_points(model)]
    assert names == ["fc1", "fc2", "fc3", "fc4", "fc5", "add", "fc6", "fc7"]


@pytest.mark.parametrize("spec", list(SMALL) + ["AlainMLP"])
def test_probe_points_are_registered_in_forward_order(spec):
    kw = SMALL.get(spec, dict(span=3, depth=2))
    model = build_model(spec, 5, **kw).eval()
    points = probe_points(model)
    names = [p.name for p in points]
    called = []
    for tap in taps(model):
        tap.register_forward_hook(lambda m, i, o: called.append(m.point.name))
    with torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert called == names
    assert len(set(names)) == len(names)
    assert all("/" not in n and n for n in names)
    assert all(p.shape is not None for p in points)


def test_mpnet_probe_points_and_downsampling_follow_phd_lab():
    model = build_model("MPNet2(1:3x3,2:7x7)", 10, widths=(2, 3, 4, 5))
    points = {p.name: p for p in probe_points(model)}
    assert list(points)[:6] == ["stem", "s0.b0.min.0", "s0.b0.max.0", "s0.b0.max.1", "s0.b0.add", "s0.b1.min.0"]
    assert points["s0.b0.add"].kind == "add" and points["s0.b0.add"].pathway == "trunk"
    # every stage halves: 32 -> 32 (block 0) -> 16 (block 1, last conv of each pathway strided)
    assert points["s0.b0.max.1"].shape == (2, 32, 32)
    assert points["s0.b1.max.0"].shape == (2, 32, 32)
    assert points["s0.b1.max.1"].shape == (2, 16, 16)
    assert points["s1.b0.min.0"].shape == (3, 16, 16)  # channels change in the first block
    assert points["s3.b1.add"].shape == (5, 2, 2)
    assert model.stages[0][1].pathways["max"][1].conv.stride == (2, 2)
    assert model.stages[0][1].pathways["max"][0].conv.stride == (1, 1)


def test_downsampling_options():
    model = build_model("MPNet2(1:3x3,2:7x7)", 10, widths=(2, 2, 2, 2), downsample="first",
                        stride_block="first", stage_strides=(1, 2, 2, 2))
    points = {p.name: p for p in probe_points(model)}
    assert points["s0.b1.add"].shape == (2, 32, 32)  # CIFAR convention: stage 0 keeps the size
    assert points["s1.b0.max.0"].shape == (2, 16, 16)  # stride on the first conv of the first block
    assert model.stages[1][0].pathways["max"][0].conv.stride == (2, 2)
    assert model.stages[1][0].pathways["max"][1].conv.stride == (1, 1)
    assert points["s3.b1.add"].shape == (2, 4, 4)


def test_concat_merge_has_a_concat_point():
    model = build_model("MPNet1(1:3x3,2:5x5)", 10, widths=(2, 2, 2, 2), merge="concat")
    cat = [p for p in probe_points(model) if p.kind == "concat"]
    assert [p.name for p in cat] == [f"s{s}.b0.cat" for s in range(4)]
    assert model.stages[0][0].merge.unit.conv.in_channels == 4


# --- parameter counts (formulas written out independently of the builders) -------------------

def conv(c_in, c_out, k, bias=False):
    return c_in * c_out * k * k + (c_out if bias else 0)


def bn(c):
    return 2 * c


def vgg16_params(classes=10):
    cfg = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    total, c_in = 0, 3
    for c in cfg:
        total += conv(c_in, c, 3, bias=True) + bn(c)
        c_in = c
    return total + bn(512) + 512 * 256 + 256 + bn(256) + 256 * classes + classes


def resnet_params(blocks, classes=10):
    total, c_in = conv(3, 64, 3) + bn(64), 64
    for s, (n, w) in enumerate(zip(blocks, (64, 128, 256, 512))):
        for b in range(n):
            total += conv(c_in, w, 3) + bn(w) + conv(w, w, 3) + bn(w)
            if c_in != w or (s > 0 and b == 0):
                total += conv(c_in, w, 1) + bn(w)
            c_in = w
    return total + 512 * classes + classes


def densenet18_params(classes=10, k=32):
    total, c = conv(3, 64, 3) + bn(64), 64
    for s in range(4):
        for _ in range(4):
            total += bn(c) + conv(c, 4 * k, 1) + bn(4 * k) + conv(4 * k, k, 3)
            c += k
        if s < 3:
            total += bn(c) + conv(c, c // 2, 1)
            c //= 2
    return total + bn(c) + c * classes + classes


def mlp_params(d_in=784, width=128, span=128, depth=8, classes=10):
    return d_in * width + width + (span + depth) * (width * width + width) + width * classes + classes


def mpnet_params(blocks, pathways, classes=10, widths=(64, 128, 256, 512)):
    """`blocks`: blocks per stage, one int for all stages or one per stage."""
    per_stage = blocks if isinstance(blocks, tuple) else (blocks,) * 4
    total, c_in = conv(3, widths[0], 3) + bn(widths[0]), widths[0]
    for w, n_blocks in zip(widths, per_stage):
        for _ in range(n_blocks):
            for n, k in pathways:
                total += conv(c_in, w, k) + bn(w) + (n - 1) * (conv(w, w, k) + bn(w))
            c_in = w
    return total + widths[-1] * classes + classes


EXPECTED = {
    "VGG16": vgg16_params(),
    "ResNet18": resnet_params((2, 2, 2, 2)),
    "ResNet34": resnet_params((3, 4, 6, 3)),
    "DenseNet18": densenet18_params(),
    "MPNet2(1:3x3,4:7x7)": mpnet_params(2, [(1, 3), (4, 7)]),
    "MPNet2(2:3x3,2:7x7)": mpnet_params(2, [(2, 3), (2, 7)]),
    "MPNet2(1:3x3,2:7x7)": mpnet_params(2, [(1, 3), (2, 7)]),
    "MPNet2(8:3x3,8:3x3)": mpnet_params(2, [(8, 3), (8, 3)]),
    "MPNet4(8:3x3,1:7x7)": mpnet_params(4, [(8, 3), (1, 7)]),
}


@pytest.mark.parametrize("spec", list(EXPECTED))
def test_parameter_counts(spec):
    with torch.device("meta"):  # no memory, no init cost: only shapes matter here
        model = build_model(spec, 10)
    assert sum(p.numel() for p in model.parameters()) == EXPECTED[spec]


def test_parameter_counts_known_values():
    # published counts of the CIFAR ResNets (e.g. kuangliu/pytorch-cifar) and the docs table
    assert EXPECTED["ResNet18"] == 11_173_962
    assert EXPECTED["ResNet34"] == 21_282_122
    assert EXPECTED["VGG16"] == 14_858_570
    model = build_model("AlainMLP", 10, in_channels=1, input_size=28)
    assert sum(p.numel() for p in model.parameters()) == mlp_params() == 2_347_402


def test_concat_parameter_count():
    model = build_model("MPNet1(1:3x3,1:5x5)", 10, widths=(2, 3, 4, 5), merge="concat")
    widths = (2, 3, 4, 5)
    expected = mpnet_params(1, [(1, 3), (1, 5)], widths=widths) + sum(conv(2 * w, w, 1) + bn(w) for w in widths)
    assert sum(p.numel() for p in model.parameters()) == expected


# --- training ------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", list(SMALL) + ["AlainMLP"])
def test_one_sgd_step_changes_the_weights(spec):
    torch.manual_seed(0)
    kw = SMALL.get(spec, dict(span=3, depth=2))
    model = build_model(spec, 10, **kw).train()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters())]
    assert sum(changed) >= len(changed) // 2


@pytest.mark.parametrize("spec", ["VGG16", "ResNet18"])
def test_full_width_step_on_cpu(spec):
    torch.manual_seed(0)
    model = build_model(spec, 10).train()
    loss = F.cross_entropy(model(torch.randn(2, 3, 32, 32)), torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())


# --- blocks per stage ------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, blocks", [
    ("MPNet2(1:3x3,4:7x7)", (1, 1, 1, 1)),  # phd-lab mpnet18_1_4_3_7 (Fig. 5a)
    ("MPNet4(1:3x3,4:7x7)", (2, 2, 2, 2)),  # mpnet36_1_4_3_7 (Fig. 5b, 6b)
    ("MPNet4(8:3x3,1:7x7)", (2, 2, 2, 2)),  # mpnet36_8_1_3_7 (Fig. 8c)
    ("MPNet2(8:3x3,8:3x3)", (1, 1, 1, 1)),
])
def test_blocks_option_sets_the_blocks_per_stage(spec, blocks):
    with torch.device("meta"):
        model = build_model(spec, 10, blocks=list(blocks))
    pathways = [(n, k) for n, k, _ in parse_mpnet(spec).pathways]
    assert sum(p.numel() for p in model.parameters()) == mpnet_params(blocks, pathways)
    assert model.blocks_per_stage == blocks
    assert [len(stage) for stage in model.stages] == list(blocks)


def test_blocks_option_overrides_k_and_is_logged(caplog):
    with caplog.at_level("INFO", logger="flowprobe.models.mpnet"):
        model = build_model("MPNet4(1:3x3,2:5x5)", 10, widths=(2, 2, 2, 2), blocks=(1, 3, 2, 1))
    points = probe_points(model)
    blocks = {(p.stage, p.block) for p in points if p.stage >= 0}
    assert sorted(blocks) == [(0, 0), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (3, 0)]
    # the stride sits in the last block of each stage: 32 -> 16 -> 8 -> 4 -> 2
    shapes = {p.name: p.shape for p in points}
    assert shapes["s1.b1.add"] == (2, 16, 16) and shapes["s1.b2.add"] == (2, 8, 8)
    assert "blocks per stage [1, 3, 2, 1] (from the blocks option)" in caplog.text
    assert build_model("MPNet2(1:3x3)", 10, widths=(2, 2, 2, 2)).blocks_per_stage == (2, 2, 2, 2)


@pytest.mark.parametrize("blocks", [(1, 1, 1), (1, 0, 1, 1), 2, (1, 1, 1.5, 1)])
def test_bad_blocks_are_spec_errors(blocks):
    with pytest.raises(ModelSpecError, match="blocks="):
        build_model("MPNet2(1:3x3)", 10, widths=(2, 2, 2, 2), blocks=blocks)


# --- points a skip connection bypasses -------------------------------------------------------------

def _labels(model):
    return {p.name: (p.pathway, p.position) for p in probe_points(model)}


def test_resnet_branch_points():
    labels = _labels(build_model("ResNet18", 10, widths=(2, 2, 2, 2)))
    assert [n for n in labels if n.startswith("s0.b0")] == ["s0.b0.conv", "s0.b0.branch", "s0.b0.add"]
    for s, n_blocks in enumerate((2, 2, 2, 2)):
        for b in range(n_blocks):
            assert labels[f"s{s}.b{b}.conv"] == ("branch", 0)
            assert labels[f"s{s}.b{b}.branch"] == ("branch", 1)
            assert labels[f"s{s}.b{b}.add"][0] == "trunk"
    trunk = [pos for pathway, pos in labels.values() if pathway == "trunk"]
    assert trunk == list(range(9))  # stem, then one add per block


def test_densenet_branch_points():
    model = build_model("DenseNet18", 10, growth_rate=2, init_features=4)
    points = {p.name: p for p in probe_points(model)}
    assert [n for n in points if n.startswith("s0.b0")] == ["s0.b0.bottleneck", "s0.b0.new", "s0.b0.cat"]
    assert (points["s0.b0.bottleneck"].pathway, points["s0.b0.bottleneck"].position) == ("branch", 0)
    assert (points["s0.b0.new"].pathway, points["s0.b0.new"].position) == ("branch", 1)
    assert points["s0.b0.new"].shape == (2, 32, 32)  # growth-rate channels: the new features only
    assert points["s0.b1.cat"].shape == (8, 32, 32) and points["s0.b1.cat"].pathway == "trunk"
    assert points["s0.trans"].pathway == "trunk"


def test_mlp_branch_points():
    labels = _labels(build_model("AlainMLP", 10, in_channels=1, input_size=28, span=4, depth=2))
    assert labels == {"fc1": ("trunk", 0), "fc2": ("branch", 0), "fc3": ("branch", 1), "fc4": ("branch", 2),
                      "fc5": ("branch", 3), "add": ("trunk", 1), "fc6": ("trunk", 2), "fc7": ("trunk", 3)}


def _ablate_last_branch_tap(model, stage, block):
    ends = [t for t in taps(model) if (t.point.stage, t.point.block, t.point.pathway) == (stage, block, "branch")]
    ends[-1].ablate = True


def _capture(module, store, key):
    module.register_forward_hook(lambda m, i, o: store.__setitem__(key, (i[0].detach(), o.detach())))


def test_zeroing_the_branch_removes_a_residual_branch():
    torch.manual_seed(0)
    model = build_model("ResNet18", 10, widths=(3, 4, 5, 6)).eval()
    seen = {}
    for name, index in (("identity", 1), ("projection", 2)):  # s0.b1 and s1.b0 (1x1 conv shortcut)
        _capture(model.stages[index], seen, name)
    _ablate_last_branch_tap(model, 0, 1)
    _ablate_last_branch_tap(model, 1, 0)
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    for name, index in (("identity", 1), ("projection", 2)):
        x, out = seen[name]
        expected = F.relu(model.stages[index].shortcut(x))
        assert torch.equal(out, expected), name
        assert out.abs().sum() > 0


def test_zeroing_the_new_features_removes_a_dense_layer():
    torch.manual_seed(0)
    model = build_model("DenseNet18", 10, growth_rate=2, init_features=4).eval()
    seen = {}
    _capture(model.stages.s1_b2, seen, "layer")
    _ablate_last_branch_tap(model, 1, 2)
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    x, out = seen["layer"]
    assert torch.equal(out[:, : x.shape[1]], x)
    assert torch.equal(out[:, x.shape[1]:], torch.zeros_like(out[:, x.shape[1]:]))


def test_zeroing_the_last_span_layer_removes_the_mlp_span():
    torch.manual_seed(0)
    model = build_model("AlainMLP", 10, in_channels=1, input_size=28, span=4, depth=2, width=8).eval()
    seen = {}
    _capture(model.first, seen, "fc1")
    _capture(model.add_tap, seen, "add")
    _ablate_last_branch_tap(model, 1, 0)
    with torch.no_grad():
        model(torch.randn(3, 1, 28, 28))
    assert torch.equal(seen["add"][1], seen["fc1"][1])


def test_mpnet_spec_is_a_dataclass():
    assert MPNetSpec(2, [(1, 3, 1)]) == parse_mpnet("MPNet2(1:3x3)")
