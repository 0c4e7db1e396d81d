"""Verdicts on probe tables built to show what the paper shows: the three Sec. 3 architectures,
the long-skip MLP and the five MPNet examples. Each table's answer is the paper's, written here
by hand; a broken rule gives another answer."""

from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest

from flowprobe.config import DEFAULTS
from flowprobe.models import build_model, probe_points
from flowprobe.verdicts import difference, pathway_verdicts, predicted_roles, run_verdicts, verdict_table

TOLS = DEFAULTS["verdicts"]
COLS = ["probe_point", "stage", "block", "pathway", "position", "input_receptive_field", "test_acc"]


def table(rows, half_width=0.002):
    """Probe table from (name, stage, block, pathway, position, input RF, accuracy) rows, with a
    symmetric confidence interval of `half_width` around every accuracy."""
    frame = pd.DataFrame(rows, columns=COLS)
    return frame.assign(test_acc_lo=frame["test_acc"] - half_width, test_acc_hi=frame["test_acc"] + half_width)


def verdicts(points, resolution=32):
    out = run_verdicts(points, resolution, **TOLS)
    return out[out["level"] == "layer"].set_index(["verdict", "probe_point"])


# --- Sec. 3: VGG16 tail (Fig. 1, 3a) ---

def vgg16_at_32px():
    """VGG16's own probe points; accuracy rises to conv7 (the border layer) and then stays flat."""
    points = pd.DataFrame([asdict(p) for p in probe_points(build_model("VGG16", 10, input_size=32))])
    points = points.rename(columns={"name": "probe_point"})
    rise = [0.35, 0.42, 0.50, 0.56, 0.63, 0.70, 0.76]
    flat = [0.762, 0.758, 0.761, 0.759, 0.757, 0.760, 0.758, 0.756][: len(points) - len(rise)]
    return table(points.assign(test_acc=rise + flat)[COLS].values.tolist())


def test_vgg16_tail_starts_at_the_border_layer_conv7():
    v = verdicts(vgg16_at_32px()).loc["tail"]
    names = list(v.index)
    assert names.index("conv7") == 6
    assert list(v["predicted"]) == ["no"] * 6 + ["yes"] * (len(names) - 6)  # conv7: input RF 32 >= 32 px
    assert list(v["observed"][:6]) == ["no"] * 6
    assert set(v["observed"][7:]) == {"yes"}  # conv8 onwards: within 1 point of the best earlier layer
    assert set(v["agree"][7:]) == {"yes"} and set(v["agree"][:6]) == {"yes"}
    assert v.loc["conv9", "reference"] == "conv8"  # the best earlier point (0.762)


def test_wide_intervals_leave_the_flat_tail_undecided():
    wide = vgg16_at_32px()
    wide["test_acc_lo"], wide["test_acc_hi"] = wide["test_acc"] - 0.02, wide["test_acc"] + 0.02
    v = verdicts(wide).loc["tail"]
    assert set(v["observed"][7:]) == {"undecided"} and set(v["agree"][7:]) == {"undecided"}
    assert v.loc["conv2", "observed"] == "no"  # +7 points clears 1 point even with ±2 on each side
    point_only = wide.drop(columns=["test_acc_lo", "test_acc_hi"])  # an old probes.csv
    assert set(verdicts(point_only).loc["tail", "observed"][7:]) == {"yes"}


# --- Sec. 3: ResNet zig-zag, DenseNet skipped last block, MLP span (Fig. 2, 3) ---

def resnet_blocks(branch_accs, rf_step=6):
    """stem -> per block: conv (branch 0), branch output (branch 1), add; input RF grows by rf_step a layer."""
    rows, rf, acc_in = [("stem", -1, -1, "trunk", 0, 1, 0.30)], 3, 0.30
    for b, (conv, out, add) in enumerate(branch_accs):
        rows += [(f"s0.b{b}.conv", 0, b, "branch", 0, rf, conv), (f"s0.b{b}.branch", 0, b, "branch", 1, rf + rf_step, out),
                 (f"s0.b{b}.add", 0, b, "trunk", b + 1, rf + 2 * rf_step, add)]
        rf += 2 * rf_step
    return table(rows)


def test_resnet_zigzag_in_the_tail_is_skipped_and_not_before():
    # blocks 0-1 productive (branch output above the input); blocks 2-4 past the border (input RF >= 32):
    # accuracy drops inside the branch and recovers at the add
    points = resnet_blocks([(0.35, 0.45, 0.47), (0.50, 0.58, 0.60), (0.55, 0.52, 0.61), (0.50, 0.48, 0.61),
                            (0.52, 0.49, 0.61)])
    v = verdicts(points).loc["skipped"]
    assert v.loc["s0.b0.branch", "predicted"] == "no" and v.loc["s0.b0.branch", "observed"] == "no"
    for b in (2, 3, 4):
        row = v.loc[f"s0.b{b}.branch"]
        assert (row["predicted"], row["observed"], row["agree"]) == ("yes", "yes", "yes")
    assert v.loc["s0.b3.branch", "reference"] == "s0.b2.add"  # the block input (below the add: 0.61 = 0.61)
    assert "s0.b2.add" not in v.index  # merges are never skipped


def test_densenet_skips_its_last_block():
    rows, rf = [("stem", -1, -1, "trunk", 0, 1, 0.30)], 3
    cat = 0.30
    for s in range(4):
        for b in range(4):
            last = s == 3  # the last dense block: new features decay, the concatenation stays flat
            new = cat - 0.04 * (b + 1) if last else cat + 0.03
            rows += [(f"s{s}.b{b}.bottleneck", s, b, "branch", 0, rf, new + 0.01),
                     (f"s{s}.b{b}.new", s, b, "branch", 1, rf + 2, new),
                     (f"s{s}.b{b}.cat", s, b, "trunk", 4 * s + b + 1, rf + 2, cat if last else cat + 0.03)]
            cat = rows[-1][-1]
            rf += 2
        rf = 32 if s == 2 else rf  # the border sits at the last block's input
    v = verdicts(table(rows)).loc["skipped"]
    last = v[v.index.str.startswith("s3.") & v.index.str.endswith(".new")]
    assert set(last["predicted"]) == {"yes"} and set(last["observed"]) == {"yes"}
    earlier = v[~v.index.str.startswith("s3.")]
    assert set(earlier["predicted"]) == {"no"} and set(earlier["observed"]) == {"no"}


def test_mlp_span_is_skipped_and_recovers_at_the_add():
    span = [0.60, 0.40, 0.20, 0.11]
    rows = [("fc1", 0, 0, "trunk", 0, 1, 0.85)]
    rows += [(f"fc{i + 2}", 1, 0, "branch", i, 28, a) for i, a in enumerate(span)]
    rows += [("add", 1, 0, "trunk", 1, 28, 0.86), ("fc6", 2, 0, "trunk", 2, 28, 0.86)]
    v = verdicts(table(rows), resolution=28)
    skipped = v.loc["skipped"]
    assert list(skipped.index) == ["fc2", "fc3", "fc4", "fc5"]
    assert set(skipped["predicted"]) == {"yes"} and set(skipped["observed"]) == {"yes"}
    assert skipped.loc["fc5", "margin"] == pytest.approx(0.85 - 0.11)
    assert v.loc[("tail", "add"), "reference"] == "fc1"  # a merge compares with what it merges and the trunk
    assert v.loc[("tail", "fc1"), "observed"] == "no"  # nothing before the first layer


# --- Sec. 4: the five MPNet examples ---

def mpnet(depths, carries, blocks=4, gap=0.10):
    """MPNet probe table: pathway label -> layers per block; `carries` the pathways that advance
    accuracy to the add (the others end `gap` below the block input)."""
    rows, acc, rf = [("stem", -1, -1, "trunk", 0, 1, 0.30)], 0.30, 3
    for b in range(blocks):
        after = acc + 0.08
        for label, depth in depths.items():
            for i in range(depth):
                end = after - 0.005 if label in carries else acc - gap
                rows.append((f"s{b}.b0.{label}.{i}", b, 0, label, i, rf + i, acc + (end - acc) * (i + 1) / depth))
        rows.append((f"s{b}.b0.add", b, 0, "trunk", b + 1, rf + 10, after))
        acc, rf = after, rf + 10
    return table(rows)


PAPER_MPNETS = [  # (figure, depths, pathways that advance accuracy, roles the paper reports)
    ("Fig. 5 MPNet2(1:3x3, 4:7x7)", {"min": 1, "max": 4}, {"min"}, {"min": "dominant", "max": "non-dominant"}),
    ("Fig. 6a MPNet2(8:3x3, 1:21x21)", {"min": 8, "max": 1}, {"max"}, {"min": "non-dominant", "max": "dominant"}),
    ("Fig. 7 MPNet2(2:3x3, 2:7x7)", {"min": 2, "max": 2}, {"min", "max"}, {"min": "coexisting", "max": "coexisting"}),
    ("Fig. 7 MPNet2(1:3x3, 2:7x7)", {"min": 1, "max": 2}, {"min", "max"}, {"min": "coexisting", "max": "coexisting"}),
    ("Fig. 9 MPNet2(8:3x3, 8:3x3)", {"p0": 8, "p1": 8}, {"p0", "p1"}, {"p0": "coexisting", "p1": "coexisting"}),
]


@pytest.mark.parametrize("figure, depths, carries, roles", PAPER_MPNETS, ids=[p[0] for p in PAPER_MPNETS])
def test_the_papers_five_mpnet_examples(figure, depths, carries, roles):
    assert predicted_roles(depths, TOLS["depth_ratio"]) == roles
    out = pathway_verdicts(mpnet(depths, carries), TOLS["pathway_tol"], TOLS["depth_ratio"]).set_index("pathway")
    assert out["predicted"].to_dict() == roles and out["observed"].to_dict() == roles
    assert out["depth"].to_dict() == {k: float(v) for k, v in depths.items()}
    skipped = verdicts(mpnet(depths, carries), resolution=1000).loc["skipped"]
    non_dominant = [p for p, r in roles.items() if r == "non-dominant"]
    assert set(skipped.loc[skipped["pathway"].isin(non_dominant), "predicted"]) <= {"yes"}
    assert set(skipped.loc[~skipped["pathway"].isin(non_dominant), "predicted"]) == {"no"}
    last = skipped[skipped.index.str.endswith(f".{max(depths.values()) - 1}")]
    assert set(last.loc[last["pathway"].isin(non_dominant), "observed"]) <= {"yes"}  # ends below the block input


def test_role_gap_inside_its_interval_is_undecided():
    points = mpnet({"min": 1, "max": 4}, {"min"}, gap=-0.05)  # the deep path ends 2.5 points below the shallow
    decided = pathway_verdicts(points, 0.02, 2.0).set_index("pathway")
    assert decided.loc["max", "observed"] == "non-dominant"
    points["test_acc_lo"], points["test_acc_hi"] = points["test_acc"] - 0.01, points["test_acc"] + 0.01
    out = pathway_verdicts(points, 0.02, 2.0).set_index("pathway")
    assert set(out["observed"]) == {"undecided"}  # 2.5 ± 1.4 points straddles the 2-point tolerance
    assert out.loc["max", "margin"] == pytest.approx(0.025)
    assert out.loc["max", "margin_lo"] == pytest.approx(0.025 - np.hypot(0.01, 0.01))


def test_tail_of_a_pathway_compares_within_the_pathway_and_the_trunk_before_it():
    """Issue 16: the 7x7 points rise along their own pathway; the 3x3 point beside them scored higher."""
    rows = [("stem", -1, -1, "trunk", 0, 1, 0.30), ("s0.b0.min.0", 0, 0, "min", 0, 3, 0.60),
            ("s0.b0.max.0", 0, 0, "max", 0, 7, 0.32), ("s0.b0.max.1", 0, 0, "max", 1, 13, 0.40),
            ("s0.b0.add", 0, 0, "trunk", 1, 19, 0.605)]
    v = verdicts(table(rows)).loc["tail"]
    assert v.loc["s0.b0.max.1", "reference"] == "s0.b0.max.0" and v.loc["s0.b0.max.1", "observed"] == "no"
    assert v.loc["s0.b0.max.0", "reference"] == "stem"
    assert v.loc["s0.b0.add", "reference"] == "s0.b0.min.0" and v.loc["s0.b0.add", "observed"] == "yes"


# --- intervals, seeds and the long table ---

def test_difference_adds_half_widths_in_quadrature():
    a = pd.DataFrame({"test_acc": [0.7], "test_acc_lo": [0.67], "test_acc_hi": [0.72]})
    b = pd.DataFrame({"test_acc": [0.6], "test_acc_lo": [0.56], "test_acc_hi": [0.61]})
    m, lo, hi = difference(a, b)
    assert m[0] == pytest.approx(0.1)
    assert lo[0] == pytest.approx(0.1 - np.hypot(0.03, 0.01)) and hi[0] == pytest.approx(0.1 + np.hypot(0.02, 0.04))


def test_seeds_are_pooled_by_the_envelope_of_their_intervals():
    one = mpnet({"min": 1, "max": 4}, {"min"})
    other = one.copy()
    other.loc[other["pathway"] == "max", ["test_acc", "test_acc_lo", "test_acc_hi"]] += 0.17  # ends 0.5 points below min: coexisting
    probes = pd.concat([one.assign(seed=0), other.assign(seed=1)]).assign(run="a", model="MP")
    out = verdict_table(probes, {"a": 1000}, **TOLS)
    roles = out[out["verdict"] == "role"].set_index(["seed", "pathway"])["observed"]
    assert roles[(0, "max")] == "non-dominant" and roles[(1, "max")] == "coexisting"
    assert roles[("pooled", "max")] == "undecided"  # the seeds disagree: the envelope cannot decide
    pooled = out[(out["seed"] == "pooled") & (out["probe_point"] == "s0.b0.max.3") & (out["verdict"] == "tail")]
    max_acc = one.set_index("probe_point").loc["s0.b0.max.3"]
    assert pooled["test_acc"].iloc[0] == pytest.approx(max_acc["test_acc"] + 0.17 / 2)
    assert pooled["test_acc_lo"].iloc[0] == pytest.approx(max_acc["test_acc_lo"])
    assert pooled["test_acc_hi"].iloc[0] == pytest.approx(max_acc["test_acc_hi"] + 0.17)


def test_long_table_over_runs_with_shifted_indices():
    vgg = vgg16_at_32px().assign(run="v", seed=0, model="VGG16")
    mp = mpnet({"min": 1, "max": 4}, {"min"}).assign(run="m", seed=0, model="MP")
    out = verdict_table(pd.concat([vgg, mp]), {"v": 32, "m": 1000}, **TOLS)
    assert "pooled" not in set(out["seed"])  # one seed: nothing to pool
    assert set(out.loc[out["run"] == "v", "verdict"]) == {"tail"}
    assert set(out.loc[out["run"] == "m", "verdict"]) == {"tail", "skipped", "role"}
    alone = verdict_table(mp, {"m": 1000}, **TOLS)
    pd.testing.assert_frame_equal(out[out["run"] == "m"].reset_index(drop=True), alone)
    assert out["agree"].isin(["yes", "no", "undecided"]).all()


# --- the predicted tail follows the model's border_layer flags (smallest-field rule) ---

def model_points(spec, input_size=32, **options):
    """A model's own probe points with its border_layer flags and a flat accuracy."""
    points = pd.DataFrame([asdict(p) for p in probe_points(build_model(spec, 10, input_size=input_size, **options))])
    points = points.rename(columns={"name": "probe_point"}).assign(test_acc=0.5)
    return points.assign(test_acc_lo=0.5, test_acc_hi=0.5)


def test_vgg16_border_flags_predict_the_same_tail_as_the_input_field():
    points = model_points("VGG16")
    with_flags = verdicts(points).loc["tail", "predicted"]
    without = verdicts(points.drop(columns=["border_layer"])).loc["tail", "predicted"]
    assert list(with_flags) == list(without)
    assert with_flags.loc["conv6"] == "no" and with_flags.loc["conv7"] == "yes"


def test_resnet_shortcuts_keep_every_layer_out_of_the_predicted_tail():
    # The largest input field of ResNet18's later blocks exceeds 32 px, but the identity
    # shortcuts keep the smallest field small: by the smallest-field rule nothing is tail.
    points = model_points("ResNet18", widths=[4, 4, 8, 8])
    assert (points["input_receptive_field"] >= 32).any()
    assert not points["border_layer"].any()
    assert set(verdicts(points).loc["tail", "predicted"]) == {"no"}
    assert "yes" in set(verdicts(points.drop(columns=["border_layer"])).loc["tail", "predicted"])
