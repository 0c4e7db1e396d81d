"""paper_comparison: the paper's values beside measured ones, from files written here."""

import pandas as pd
import pytest
from test_verdicts import TOLS, mpnet, resnet_blocks, vgg16_at_32px

from flowprobe.comparison import COMPARISON_COLUMNS, paper_comparison
from flowprobe.config import DEFAULTS
from flowprobe.paper import CLAIMS, claims_for, files_needed, scale
from flowprobe.verdicts import verdict_table

PAPER_RUN = DEFAULTS["defaults"] | {"dataset": "cifar10", "resolution": 32, "model_options": {}}


def run(model, **kw):
    return PAPER_RUN | {"model": model} | kw


def test_claims_match_the_spec_and_numbers_need_the_papers_dataset():
    quantities = lambda r: sorted(c.quantity for c in claims_for(r))
    assert quantities(run("MPNet2(1:3x3,4:7x7)")) == ["ablation_drop", "roles", "test_accuracy"]
    assert quantities(run("MPNet2( 1:3x3, 4:7x7 )", dataset="cifar10-mini")) == ["ablation_drop", "roles", "test_accuracy"]
    assert quantities(run("MPNet2(8:3x3, 8:3x3)")) == ["roles"]  # Fig. 9's CKA was measured on ImageNette
    assert quantities(run("MPNet2(8:3x3, 8:3x3)", dataset="imagenette", resolution=160)) == ["cka_diagonal", "roles"]
    assert claims_for(run("MPNet1(1:3x3, 2:5x5)")) == []
    # a pruned retrain keeps the spec string but is not the paper's model
    assert claims_for(run("VGG16", model_options={"keep_convs": 6}, pruned={"run": "vgg16"})) == []
    assert quantities(run("MPNet2(8:3x3, 1:11x11d2)", dataset="imagenette", resolution=160)) == ["roles"]
    assert files_needed(claims_for(run("MPNet2(8:3x3, 8:3x3)", dataset="imagenette"))) == ["cka_pathways.csv", "train_log.csv"]


def test_scale_names_every_difference_from_the_papers_setting():
    claim = next(c for c in CLAIMS if c.model == "VGG16")
    assert scale(run("VGG16"), claim) == "paper"
    demo = run("VGG16", dataset="cifar10-mini", model_options={"widths": [16, 32], "stride_block": "first"},
               train=PAPER_RUN["train"] | {"epochs": 15}, max_per_class=12)
    assert scale(demo, claim) == ("dataset cifar10-mini (paper cifar10); 12 training images per class; "
                                  "model widths=[16, 32]; 15 epochs (paper 30)")
    assert scale(run("VGG16", max_images=4), claim) == "4 training images"


def write_run(tmp_path, name, seed, acc, drop=None):
    folder = tmp_path / name / str(seed)
    folder.mkdir(parents=True)
    pd.DataFrame({"epoch": [1, 2], "test_acc": [0.1, acc]}).to_csv(folder / "train_log.csv", index=False)
    files = {"train_log.csv": str(folder / "train_log.csv")}
    if drop is not None:
        rows = [("intact", "none", 0.8, 0.0, ""), ("non-dominant", "max", 0.8 - drop, -drop, "non-dominant")]
        pd.DataFrame(rows, columns=["target", "pathway", "accuracy", "delta", "role"]).to_csv(folder / "ablation.csv")
        files["ablation.csv"] = str(folder / "ablation.csv")
    return {"run": name, "seed": seed, "files": files}


def test_comparison_table(tmp_path):
    demo = run("MPNet2(1:3x3, 4:7x7)", dataset="cifar10-mini", train=PAPER_RUN["train"] | {"epochs": 15})
    runs = {"mp": demo, "vgg": run("VGG16"), "other": run("MPNet1(1:3x3, 2:5x5)")}
    members = [write_run(tmp_path, "mp", 0, 0.80, drop=0.03), write_run(tmp_path, "mp", 1, 0.84, drop=0.01),
               write_run(tmp_path, "vgg", 0, 0.905)]
    probes = pd.concat([mpnet({"min": 1, "max": 4}, {"min"}).assign(run="mp", seed=s, model=demo["model"])
                        for s in (0, 1)] + [vgg16_at_32px().assign(run="vgg", seed=0, model="VGG16")])
    verdicts = verdict_table(probes, {"mp": 1000, "vgg": 32}, **TOLS)
    table = paper_comparison(runs, members, verdicts)
    assert list(table.columns) == COMPARISON_COLUMNS
    matched = table[table["run"].notna()].set_index(["run", "quantity"])
    assert set(matched.index.get_level_values(0)) == {"mp", "vgg"}
    acc = matched.loc[("mp", "test_accuracy")]
    assert (acc.measured, acc.measured_lo, acc.measured_hi) == (pytest.approx(0.82), 0.80, 0.84)
    assert acc.agree == "no" and acc.paper_value == 0.8829 and acc.n_seeds == 2  # 0.84 + 2 points < 88.29
    assert acc.scale == "dataset cifar10-mini (paper cifar10); 15 epochs (paper 30)"
    assert matched.loc[("mp", "roles"), "agree"] == "yes"
    assert matched.loc[("mp", "roles"), "measured"] == "min=dominant, max=non-dominant"
    drop = matched.loc[("mp", "ablation_drop")]
    assert drop.measured == pytest.approx(0.02) and drop.agree == "yes"  # within 2 points of 2.16
    assert matched.loc[("vgg", "test_accuracy"), "agree"] == "yes"  # 90.5 vs 91.34, within 2 points
    assert matched.loc[("vgg", "border_layer"), "measured"] == "conv7"
    assert matched.loc[("vgg", "border_layer"), "agree"] == "yes"
    assert matched.loc[("vgg", "tail_after_border"), "agree"] == "yes"
    unmatched = table[table["run"].isna()]
    assert set(unmatched["agree"]) == {"no run"} and len(table) == len(CLAIMS)  # one row per claim here
    assert "Fig. 9" in set(unmatched["figure"]) and list(table["figure"]).index("Fig. 1") == 0


def test_zigzag_claim_reads_the_branch_outputs_in_the_tail_and_cka_the_diagonal(tmp_path):
    points = resnet_blocks([(0.35, 0.45, 0.47), (0.50, 0.58, 0.60), (0.55, 0.52, 0.61), (0.60, 0.63, 0.64)])
    verdicts = verdict_table(points.assign(run="r", seed=0, model="ResNet34"), {"r": 32}, **TOLS)
    members = [write_run(tmp_path, "r", 0, 0.9)]
    row = paper_comparison({"r": run("ResNet34")}, members, verdicts).set_index("run").loc["r"]
    # tail blocks 2 and 3: block 2's branch output dips (skipped), block 3's does not: a contradiction
    assert (row.quantity, row.measured, row.agree) == ("skipped", "1 yes / 1 no / 0 undecided", "no")

    cka = pd.DataFrame({"position_a": [0, 0, 1, 1], "position_b": [0, 1, 0, 1], "cka": [0.97, 0.5, 0.5, 0.81]})
    imagenette = run("MPNet2(8:3x3, 8:3x3)", dataset="imagenette", resolution=160)
    members = [write_run(tmp_path, "m", 0, 0.7)]
    cka.to_csv(tmp_path / "cka.csv", index=False)
    members[0]["files"]["cka_pathways.csv"] = str(tmp_path / "cka.csv")
    probes = mpnet({"p0": 2, "p1": 2}, {"p0", "p1"}).assign(run="m", seed=0, model=imagenette["model"])
    table = paper_comparison({"m": imagenette}, members, verdict_table(probes, {"m": 160}, **TOLS))
    mine = table[table["run"] == "m"].set_index("quantity")
    assert (mine.loc["cka_diagonal", "measured"], mine.loc["cka_diagonal", "agree"]) == ("0.81-0.97", "yes")  # >= 0.84 - 0.05
    assert mine.loc["roles", "agree"] == "yes"
