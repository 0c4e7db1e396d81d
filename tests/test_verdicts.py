"""Verdicts computed from hand-made probe tables whose answer is known."""
import pandas as pd

from flowprobe.verdicts import block_inputs, layer_verdicts, pathway_verdicts, verdict_table


def points(rows):
    cols = ["probe_point", "stage", "block", "pathway", "position", "input_receptive_field", "test_acc"]
    return pd.DataFrame(rows, columns=cols)


# stem → block(min: 1 layer, max: 3 layers) → add → block(min 1, max 3) → add
MPNET = points([
    ("stem", -1, -1, "trunk", 0, 1, 0.30),
    ("b0.min.0", 0, 0, "min", 0, 3, 0.40),
    ("b0.max.0", 0, 0, "max", 0, 3, 0.28),
    ("b0.max.1", 0, 0, "max", 1, 9, 0.27),
    ("b0.max.2", 0, 0, "max", 2, 15, 0.31),
    ("b0.add", 0, 0, "trunk", 1, 21, 0.42),
    ("b1.min.0", 0, 1, "min", 0, 21, 0.50),
    ("b1.max.0", 0, 1, "max", 0, 21, 0.41),
    ("b1.max.1", 0, 1, "max", 1, 27, 0.40),
    ("b1.max.2", 0, 1, "max", 2, 33, 0.43),
    ("b1.add", 0, 1, "trunk", 2, 39, 0.50),
])


def test_block_inputs_are_the_trunk_point_before_each_block():
    assert list(block_inputs(MPNET)) == ["stem"] * 5 + ["b0.add"] * 5 + ["b1.add"]


def test_layer_verdicts():
    v = layer_verdicts(MPNET, resolution=32).set_index("probe_point")
    assert v.loc["b1.max.1", "tail_predicted"] == False and v.loc["b1.max.2", "tail_predicted"] == True  # input RF 33 >= 32
    assert v.loc["b0.max.0", "skipped_observed"] and v.loc["b0.max.1", "skipped_observed"]  # below stem's 0.30
    assert not v.loc["b0.min.0", "skipped_observed"]
    assert v.loc["b1.add", "tail_observed"]  # 0.50 is no better than b1.min.0's 0.50
    assert not v.loc["b1.min.0", "tail_observed"]
    assert not v["skipped_predicted"][["stem", "b0.add", "b1.add"]].any()


def test_pathway_roles_dominant_and_coexisting():
    roles = pathway_verdicts(MPNET).set_index("pathway")
    # min gains: 0.40-0.30, 0.50-0.42 → 0.09; max gains: 0.01, 0.01 → 0.01
    assert abs(roles.loc["min", "mean_gain"] - 0.09) < 1e-12 and abs(roles.loc["max", "mean_gain"] - 0.01) < 1e-12
    assert roles.loc["min", "observed"] == "dominant" and roles.loc["max", "observed"] == "non-dominant"
    assert roles.loc["min", "predicted"] == "dominant"  # depth 1 vs 3
    twins = MPNET.copy()
    twins.loc[twins["pathway"] == "max", "test_acc"] += 0.085
    roles = pathway_verdicts(twins, tol=0.01).set_index("pathway")
    assert set(roles["observed"]) == {"coexisting"}


def test_trunk_only_model_has_no_pathway_rows_and_table_is_long():
    vgg = points([(f"conv{i}", 0, -1, "trunk", i, 2 * i + 1, 0.1 * i) for i in range(1, 6)])
    assert pathway_verdicts(vgg).empty
    table = pd.concat([MPNET.assign(run="a", seed=0, model="MP"), vgg.assign(run="b", seed=0, model="VGG")])
    out = verdict_table(table, {"a": 32, "b": 8})
    assert set(out["level"]) == {"layer", "pathway"}
    assert len(out[(out["run"] == "b") & (out["level"] == "layer")]) == 2 * 5
    tail_b = out[(out["run"] == "b") & (out["verdict"] == "tail")].set_index("probe_point")
    assert list(tail_b["predicted"]) == [False, False, False, True, True]  # input RFs 3, 5, 7, 9, 11 vs 8 px


def test_verdicts_do_not_depend_on_the_row_index():
    """Rows of a second run in a long table carry a shifted index."""
    shifted = MPNET.set_axis(MPNET.index + 100)
    assert pathway_verdicts(shifted).equals(pathway_verdicts(MPNET))
    table = pd.concat([MPNET.assign(run="a", seed=0, model="MP"), MPNET.assign(run="b", seed=0, model="MP")])
    roles = verdict_table(table, {"a": 32, "b": 32})
    roles = roles[roles["verdict"] == "role"]
    assert roles["mean_gain"].notna().all() and (roles.groupby("run")["observed"].apply(list).tolist()[0] == roles.groupby("run")["observed"].apply(list).tolist()[1])
