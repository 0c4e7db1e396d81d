"""`flowprobe points SPEC`: the probe-point table of zoo, torchvision and import specs."""
import pytest

from flowprobe.cli import main
from flowprobe.commands.points import points_table


@pytest.mark.parametrize("spec, options, first, count", [
    ("VGG16", "{widths: [2, 2, 2, 2, 2]}", "conv1", 14),
    ("torchvision:resnet18", "{}", "conv1", 33),
    ("import:flowprobe.models.vgg:build_vgg16", "{widths: [2, 2, 2, 2, 2]}", "features.conv1.conv", 14),
])
def test_prints_every_point(spec, options, first, count, capsys):
    assert main(["points", spec, "--options", options]) == 0
    out = capsys.readouterr().out
    rows = out.strip().splitlines()
    assert rows[1].split()[0] == first
    assert rows[-1].startswith(f"{count} probe points")


def test_table_follows_the_resolution():
    small = points_table("torchvision:resnet18", 32).set_index("probe_point")
    large = points_table("torchvision:resnet18", 224).set_index("probe_point")
    assert small.loc["layer4.1.add", "shape"] == "512x1x1" and large.loc["layer4.1.add", "shape"] == "512x7x7"
    # the largest field of the trunk reaches 32 / 224 px at these adds; the identity skips keep the
    # smallest field at the stem's, so by the smallest-field rule (border_layer) there is no border
    largest = [t.index[t.border_layer_max & (t.pathway == "trunk")].tolist() for t in (small, large)]
    assert largest == [["layer1.1.add"], ["layer4.0.add"]]
    assert not small.border_layer.any() and not large.border_layer.any()


def test_bad_spec_is_one_line_and_exit_2(capsys):
    assert main(["points", "torchvision:resnet19"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flowprobe: torchvision:resnet19: torchvision.models has no classification model")
    assert main(["points", "VGG16", "--options", "[1, 2]"]) == 2
