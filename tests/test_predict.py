"""Prediction without training: border layers, unproductive layers, resolution interval, CLI."""

import pandas as pd
import pytest

from flowprobe.cli import main
from flowprobe.errors import ModelSpecError
from flowprobe.predict import border_layers, predict_layers, resolution_interval

NARROW = {"widths": [2, 2, 2, 2, 2]}


def vgg16_fields() -> list[tuple[int, int]]:
    """(input RF, output RF) of VGG16's 13 3x3 convs by hand: +2j per conv, a 2x2/2 pool adds j and doubles j."""
    fields, r, j = [], 1, 1
    for n_convs in (2, 2, 3, 3, 3):
        for _ in range(n_convs):
            fields.append((r, r + 2 * j))
            r += 2 * j
        r, j = r + j, 2 * j
    return fields


def test_vgg16_at_32_px_has_border_conv7_and_a_tail():
    layers = predict_layers("VGG16", 32, NARROW).set_index("probe_point")
    assert border_layers(layers.reset_index()) == {"trunk": "conv7"}
    assert layers.index[layers["unproductive"]].tolist() == [f"conv{i}" for i in range(7, 14)]
    assert layers.loc["conv7", "input_receptive_field"] == 32
    assert not layers.loc["fc1", "unproductive"]  # the head is never counted


def test_interval_matches_the_hand_computed_fields():
    fields = vgg16_fields()
    interval = resolution_interval(predict_layers("VGG16", 32, NARROW)).set_index("pathway")
    assert interval.loc["all", "min_resolution"] == max(r_in for r_in, _ in fields) + 1 == 165
    assert interval.loc["all", "max_resolution"] == max(r for _, r in fields) == 196


@pytest.mark.parametrize("resolution, tail", [(164, ["conv13"]), (165, []), (64, [f"conv{i}" for i in range(10, 14)])])
def test_the_tail_ends_at_the_interval(resolution, tail):
    layers = predict_layers("VGG16", resolution, NARROW)
    assert layers.loc[layers["unproductive"], "probe_point"].tolist() == tail


def test_conv_fields_do_not_depend_on_the_resolution():
    small, large = predict_layers("ResNet18", 32, {"widths": [2, 2, 2, 2]}), predict_layers("ResNet18", 96, {"widths": [2, 2, 2, 2]})
    convs = small["kind"] != "linear"
    for col in ("receptive_field", "input_receptive_field", "receptive_field_min"):
        assert small.loc[convs, col].tolist() == large.loc[convs, col].tolist()
    assert small["unproductive"].sum() > large["unproductive"].sum()


def test_pathways_get_their_own_border_layer():
    layers = predict_layers("MPNet1(1:3x3, 2:7x7)", 32, {"widths": [2, 2, 2, 2]})
    borders = border_layers(layers)
    assert set(borders) == {"min", "max"}
    interval = resolution_interval(layers).set_index("pathway")
    # merges integrate no context: only convs count, the 7x7 pathway needs the larger image
    assert interval.loc["max", "min_resolution"] > interval.loc["min", "min_resolution"]
    assert interval.loc["all", "min_resolution"] == interval.loc["max", "min_resolution"]


def test_an_mlp_has_no_bounds():
    interval = resolution_interval(predict_layers("AlainMLP", 28, in_channels=1))
    assert interval["min_resolution"].isna().all()


def test_too_small_a_resolution_names_model_and_size():
    with pytest.raises(ModelSpecError, match="VGG16 at 16 px"):
        predict_layers("VGG16", 16)


def test_cli_prints_border_and_writes_csv(tmp_path, capsys):
    csv = tmp_path / "vgg.csv"
    assert main(["predict", "VGG16", "--resolution", "32", "-o", "widths=[2,2,2,2,2]", "--csv", str(csv)]) == 0
    out = capsys.readouterr().out
    assert "border layer trunk: conv7" in out and "165 <= resolution <= 196" in out
    table = pd.read_csv(csv)
    assert table.loc[table["border_layer"], "probe_point"].tolist() == ["conv7"]
    assert (table["min_resolution"] == 165).all() and len(table) == 14


def test_cli_without_tail_and_bad_option(capsys):
    assert main(["predict", "VGG16", "-r", "200", "-o", "widths=[2,2,2,2,2]"]) == 0
    assert "no unproductive layer" in capsys.readouterr().out
    assert main(["predict", "VGG16", "-r", "32", "-o", "widths"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
