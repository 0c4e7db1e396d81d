"""Receptive fields: hand-computed values, border layers, and an empirical gradient check."""

import pytest
import torch
from torch import nn

from gradient_support import measured_fields, positive_weights
from flowprobe.errors import ModelSpecError
from flowprobe.models import build_model, receptive_fields, taps
from flowprobe.models.receptive import RF_COLUMNS, Trace



def rf_table(spec, size=32, **kw):
    return receptive_fields(build_model(spec, 10, input_size=size, **kw), size).set_index("probe_point")


def test_vgg16_by_hand():
    table = rf_table("VGG16", widths=(2, 2, 2, 2, 2))
    # r: conv1 3, conv2 5, pool 6 (j 2), conv3 10, conv4 14, pool 16 (j 4), conv5 24, conv6 32, ...
    expected = {"conv1": (3, 1, 1), "conv2": (5, 3, 1), "conv3": (10, 6, 2), "conv4": (14, 10, 2),
                "conv5": (24, 16, 4), "conv6": (32, 24, 4), "conv7": (40, 32, 4), "conv8": (60, 44, 8)}
    for name, (r, r_in, jump) in expected.items():
        assert tuple(table.loc[name, ["receptive_field", "input_receptive_field", "jump"]]) == (r, r_in, jump)
    assert list(table.columns[:9]) == RF_COLUMNS[1:]
    assert table.index[table.border_layer].tolist() == ["conv7"]


@pytest.mark.parametrize("size, border", [(32, "conv7"), (64, "conv10"), (160, "conv13")])
def test_vgg16_border_moves_with_resolution(size, border):
    table = rf_table("VGG16", size, widths=(2, 2, 2, 2, 2))
    assert table.index[table.border_layer].tolist() == [border]


def test_mpnet_with_dilation_by_hand():
    # stem 3x3: r 3. Each stage has one block whose pathways carry the stride on their last
    # conv: min 3x3 grows r by 2j, max 5x5 with dilation 2 (k_eff 9) by 8j; add = max.
    table = rf_table("MPNet1(1:3x3,1:5x5d2)", 32, widths=(2, 2, 2, 2))
    r, r_min, j = 3, 3, 1
    for s in range(4):
        assert table.loc[f"s{s}.b0.min.0", "receptive_field"] == r + 2 * j
        assert table.loc[f"s{s}.b0.max.0", "receptive_field"] == r + 8 * j
        assert table.loc[f"s{s}.b0.max.0", "input_receptive_field"] == r
        assert table.loc[f"s{s}.b0.add", "receptive_field"] == r + 8 * j
        assert table.loc[f"s{s}.b0.add", "receptive_field_min"] == r_min + 2 * j
        r, r_min, j = r + 8 * j, r_min + 2 * j, 2 * j
        assert table.loc[f"s{s}.b0.add", "jump"] == j
    assert [table.loc[f"s{s}.b0.add", "receptive_field"] for s in range(4)] == [11, 27, 59, 123]
    assert [table.loc[f"s{s}.b0.add", "receptive_field_min"] for s in range(4)] == [5, 9, 17, 33]


def test_stride_on_first_conv_grows_the_field_faster():
    first = rf_table("MPNet1(2:3x3)", downsample="first", widths=(2, 2, 2, 2))
    last = rf_table("MPNet1(2:3x3)", downsample="last", widths=(2, 2, 2, 2))
    assert first.loc["s0.b0.p0.1", ["receptive_field", "jump"]].tolist() == [3 + 2 + 4, 2]
    assert last.loc["s0.b0.p0.1", ["receptive_field", "jump"]].tolist() == [3 + 2 + 2, 2]


def borders(table, column="border_layer"):
    return sorted(table.index[table[column]])


def test_border_rules_by_hand_on_a_dilated_mpnet():
    # smallest fields of the adds (through the 3x3 pathway): 5, 9, 17, 33; largest: 11, 27, 59, 123
    table = rf_table("MPNet1(1:3x3,1:5x5d2)", 32, widths=(2, 2, 2, 2))
    # smallest-field rule: only the last add sees >= 32 px along every path into it
    assert borders(table) == ["s3.b0.add"]
    # largest-field rule: the add of stage 2 (input 59), then each pathway's first conv after it
    assert borders(table, "border_layer_max") == ["s2.b0.add", "s3.b0.max.0", "s3.b0.min.0"]


def test_a_layer_stays_productive_while_a_parallel_pathway_does_not_see_the_image():
    """rfa-toolbox's is_border also asks every later layer to see the whole image: the second
    31x31 conv sees 33 px along every path into it, but the block's 3x3 pathway sees 5 px, so the
    add after it (and the layers after that) still integrate new context."""
    table = rf_table("MPNet1(1:3x3,2:31x31)", 32, widths=(2, 2, 2, 2))
    assert table.loc["s0.b0.max.1", "input_receptive_field_min"] == 33
    assert table.loc["s0.b0.add", "receptive_field_min"] == 5
    assert not table.loc["s0.b0.max.1", "border_layer"]
    assert table.loc["s0.b0.max.1", "border_layer_max"]
    # adds (smallest field) 5, 9, 17, 33: the max pathway turns unproductive in the last block
    assert borders(table) == ["s3.b0.add", "s3.b0.max.1"]


@pytest.mark.parametrize("column, field", [("border_layer", "input_receptive_field_min"),
                                           ("border_layer_max", "input_receptive_field")])
def test_at_most_one_border_layer_per_pathway_lineage(column, field):
    table = rf_table("MPNet2(1:3x3,2:7x7)", 32, widths=(2, 2, 2, 2))
    flagged = table[table[column]]
    assert sorted(flagged.pathway) == ["max", "min", "trunk"]
    for _, row in flagged.iterrows():
        lineage = table[table.pathway == row.pathway]
        assert row[field] >= 32
        assert not lineage.loc[: row.name].iloc[:-1][column].any()


def test_skip_connections_keep_resnets_productive():
    # identity and 1x1 shortcuts keep the smallest field at the stem's: no border layer at all,
    # while the largest field passes 32 px in stage 1 (ResNet34, CIFAR stem)
    table = rf_table("ResNet34", 32, widths=(2, 2, 2, 2))
    assert not table.border_layer.any()
    assert set(table[table.pathway == "trunk"].receptive_field_min) == {3}
    assert borders(table, "border_layer_max") == ["s1.b2.add", "s1.b2.branch"]


def test_densenet18_as_the_study_ran_it_skips_its_last_dense_block():
    """phd-lab's DenseNet18 (ImageNet stem) at 32 px: along the concatenations only the stem and
    the transitions grow the field, 7 -> 11 (max pool, j 4) -> 15 -> 23 -> 39 (1x1 conv + 2x2
    avg pool each): the last dense block is the tail, as the paper's Fig. 3 observes."""
    table = rf_table("DenseNet18", 32, growth_rate=2, init_features=2, stem="imagenet")
    assert [table.loc[f"s{s}.trans", "receptive_field_min"] for s in range(3)] == [15, 23, 39]
    assert borders(table) == ["s3.b0.bottleneck", "s3.b0.cat"]
    assert borders(rf_table("DenseNet18", 32, growth_rate=2, init_features=2)) == []


def test_resnet_branch_and_add_fields_by_hand():
    table = rf_table("ResNet18", 32, widths=(2, 2, 2, 2))
    row = lambda name: table.loc[name, ["input_receptive_field", "receptive_field", "receptive_field_min"]].tolist()
    assert row("s0.b0.conv") == [3, 5, 5]
    assert row("s0.b0.branch") == [5, 7, 7]
    assert row("s0.b0.add") == [7, 7, 3]  # the union of branch (7) and identity shortcut (3)
    # stage 0 ends at 11 (s0.b1); the stride-2 conv: 13 (j 2); the second conv: 13 + 2 * 2
    assert row("s1.b0.branch") == [13, 17, 9]
    assert table.loc["s1.b0.add", "receptive_field_min"] == 3  # 1x1 stride-2 shortcut


def test_densenet_new_features_and_concat_fields_by_hand():
    table = rf_table("DenseNet18", 32, growth_rate=2, init_features=2)
    assert table.loc["s0.b0.bottleneck", ["input_receptive_field", "receptive_field"]].tolist() == [3, 3]
    assert table.loc["s0.b0.new", ["input_receptive_field", "receptive_field"]].tolist() == [3, 5]
    assert table.loc["s0.b0.cat", ["receptive_field", "receptive_field_min"]].tolist() == [5, 3]
    assert table.loc["s0.b1.new", "receptive_field"] == 7


def test_input_too_small_is_a_spec_error():
    with pytest.raises(ModelSpecError, match="input size is too small"):
        Trace.start(1).pool(2, 2)


@pytest.mark.parametrize("spec, kw", [
    ("MPNet1(1:3x3,1:5x5d2)", dict(widths=(2, 2, 2, 2))),
    ("MPNet1(2:3x3,1:7x7)", dict(widths=(2, 2, 2, 2), downsample="first", merge="concat")),
    ("ResNet18", dict(widths=(2, 2, 2, 2))),
    ("DenseNet18", dict(growth_rate=2, init_features=2)),
])
def test_receptive_field_matches_gradient_support(spec, kw):
    """Field size = width of the input region a centre unit depends on; jump = shift per unit step.

    One backward pass: input sample 2t feeds probe point t's centre unit, sample 2t + 1 its right
    neighbour (eval mode keeps samples independent).
    """
    size = 64
    model = build_model(spec, 10, input_size=size, **kw).eval()
    positive_weights(model)
    # only units whose centre field is not clipped by the image border
    points = [t.point for t in taps(model) if t.point.receptive_field + 4 * t.point.jump <= size]
    assert len(points) >= 6
    measured = measured_fields(model, points, size)
    for p in points:
        assert measured[p.name] == (p.receptive_field, p.jump), p.name


@pytest.mark.parametrize("spec, kw, first", [
    ("ResNet34", dict(widths=(2, 2, 2, 2)), "s0.b0.conv"),
    ("DenseNet18", dict(growth_rate=2, init_features=2), "s0.b0.bottleneck"),
])
def test_imagenet_stem_as_in_phd_lab(spec, kw, first):
    # 7x7/2 conv: r 7, j 2; 3x3/2 max pool: r 7 + 2 * 2 = 11, j 4
    table = rf_table(spec, 32, stem="imagenet", **kw)
    assert table.loc["stem", ["receptive_field", "jump"]].tolist() == [7, 2]
    assert table.loc[first, "input_receptive_field"] == 11
    assert table.loc[first, "jump"] == 4
    model = build_model(spec, 10, stem="imagenet", **kw).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_border_rule_names_its_field():
    from flowprobe.models import border_flags, probe_points

    points = probe_points(build_model("VGG16", 10, widths=(2, 2, 2, 2, 2)))
    assert border_flags(points, 32).index(True) == 6  # conv7
    with pytest.raises(ValueError, match="receptive_field_min"):
        border_flags(points, 32, "input_receptive_field")


def test_probe_points_carry_both_border_flags_for_the_hdf5_attrs():
    from flowprobe.models import probe_points

    model = build_model("DenseNet18", 10, growth_rate=2, init_features=2, stem="imagenet")
    table = receptive_fields(model, 32).set_index("probe_point")
    points = probe_points(model)
    assert [p.border_layer for p in points] == table.border_layer.tolist()
    assert [p.border_layer_max for p in points] == table.border_layer_max.tolist()
    attrs = next(p for p in points if p.name == "s0.b2.cat").attrs()
    assert attrs["border_layer_max"] is True and attrs["border_layer"] is False
