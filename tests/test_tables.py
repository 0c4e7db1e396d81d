"""Figure tables: one row per run × seed × probe point, seed summaries, diverged runs marked."""
import numpy as np
import pandas as pd
import pytest

from flowprobe.figures import KINDS
from flowprobe.tables import accuracy_label, figure_table, final_test_accuracy, summarise

POINTS = pd.DataFrame({
    "probe_point": ["stem", "s0.b0.min.0", "s0.b0.add"], "stage": [-1, 0, 0], "block": [-1, 0, 0],
    "pathway": ["trunk", "min", "trunk"], "position": [0, 0, 1], "kind": ["conv", "conv", "add"],
    "receptive_field": [3, 5, 9], "input_receptive_field": [1, 3, 9], "border_layer": [False, False, True],
})


def member(tmp_path, run, seed, accs, log_rows):
    folder = tmp_path / f"{run}{seed}"
    folder.mkdir()
    POINTS.assign(test_acc=accs, train_acc=accs).to_csv(folder / "probes.csv", index=False)
    pd.DataFrame(log_rows).to_csv(folder / "train_log.csv", index=False)
    return {"run": run, "seed": seed, "model": "MPNet1(1:3x3)",
            "files": {"train_log.csv": str(folder / "train_log.csv"), "probes.csv": str(folder / "probes.csv")}}


def row(epoch, acc, diverged=0):
    return {"epoch": epoch, "lr": 0.1, "train_loss": 1.0, "train_acc": acc, "test_loss": 1.0, "test_acc": acc,
            "seconds": 1.0, "diverged": diverged}


def test_long_table_and_seed_summary(tmp_path):
    members = [member(tmp_path, "a", 0, [0.2, 0.3, 0.4], [row(1, 0.30), row(2, 0.50)]),
               member(tmp_path, "a", 1, [0.4, 0.5, 0.6], [row(1, 0.40), row(2, 0.70)])]
    table = figure_table(KINDS["pathway_probes"], members)
    assert len(table) == 2 * 3 and list(table.columns[:5]) == ["run", "seed", "model", "test_accuracy", "diverged"]
    assert table.groupby("seed")["test_accuracy"].first().tolist() == [0.50, 0.70]
    summary = summarise(KINDS["pathway_probes"], table)
    assert len(summary) == 3 and (summary["n_seeds"] == 2).all()
    assert summary["test_acc_mean"].tolist() == pytest.approx([0.3, 0.4, 0.5])
    assert summary["test_acc_std"].tolist() == pytest.approx([np.std([0.2, 0.4], ddof=1)] * 3)
    assert accuracy_label(table) == f"60.0 ± {100 * np.std([0.5, 0.7], ddof=1):.1f}%"


def test_diverged_run_keeps_its_last_finished_accuracy_and_is_marked(tmp_path):
    good = member(tmp_path, "a", 0, [0.2, 0.3, 0.4], [row(1, 0.30), row(2, 0.50)])
    bad = member(tmp_path, "a", 1, [0.1, 0.1, 0.1], [row(1, 0.25), row(2, float("nan"), diverged=1)])
    assert final_test_accuracy(bad["files"]["train_log.csv"]) == (0.25, True)
    assert final_test_accuracy(good["files"]["train_log.csv"]) == (0.50, False)
    label = accuracy_label(figure_table(KINDS["pathway_probes"], [good, bad]))
    assert "DIVERGED (1 of 2 seeds)" in label


def test_kind_given_by_name_or_registry_entry(tmp_path):
    members = [member(tmp_path, "a", 0, [0.2, 0.3, 0.4], [row(1, 0.30)])]
    by_name, by_kind = figure_table("layer_probes", members), figure_table(KINDS["layer_probes"], members)
    pd.testing.assert_frame_equal(by_name, by_kind)
    pd.testing.assert_frame_equal(summarise("layer_probes", by_name), summarise(KINDS["layer_probes"], by_kind))
    with pytest.raises(KeyError, match="registered kinds"):
        figure_table("violin", members)
