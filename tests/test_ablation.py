"""ablation_table: zeroing a unit equals removing it by hand; the non-dominant summary row;
fine-tuning trains a copy and is evaluated again; flags always restored."""

import copy

import pytest
import torch
from torch import nn

from flowprobe.analysis.ablation import (
    ABLATION_COLUMNS, FineTune, ablation_table, accuracy, finetuned_copy, pathway_ends, unit_roles,
)
from flowprobe.errors import ConfigError
from flowprobe.models import build_model, taps
from flowprobe.models.base import ProbePoint, Tap


@pytest.fixture
def mpnet():
    torch.manual_seed(0)
    model = build_model("MPNet2(1:3x3,2:5x5)", 3, input_size=8, widths=(4, 4, 4, 4))
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, 8, 8))  # non-default BN statistics
    return model.eval()


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(20, 3, 8, 8, generator=g), torch.randint(0, 3, (20,), generator=g)) for _ in range(3)]


def manual_logits(model, x, removed):
    """MPNet forward written out, with the pathways in `removed` {(block id, label)} set to zero."""
    h = model.stem(x)
    for s, stage in enumerate(model.stages):
        for b, block in enumerate(stage):
            outs = []
            for label, pathway in block.pathways.items():
                out = pathway(h)
                outs.append(torch.zeros_like(out) if (f"s{s}.b{b}", label) in removed else out)
            h = outs[0] + outs[1]
    return model.head(torch.flatten(model.pool(h), 1))


def manual_accuracy(model, data, removed=()):
    with torch.no_grad():
        correct = sum((manual_logits(model, x, set(removed)).argmax(1) == y).sum().item() for x, y in data)
    return correct / sum(len(y) for _, y in data)


def test_rows_and_intact_accuracy(mpnet, data):
    table = ablation_table(mpnet, lambda: data)
    assert list(table.columns) == ABLATION_COLUMNS
    assert len(table) == 1 + 8 * 2 + 2  # intact, 8 blocks x 2 pathways, each label in all blocks
    intact = table.iloc[0]
    assert (intact.target, intact.pathway) == ("intact", "none")
    with torch.no_grad():
        plain = sum((mpnet(x).argmax(1) == y).sum().item() for x, y in data) / 60
    assert intact.accuracy == plain == manual_accuracy(mpnet, data)
    assert (table.accuracy_intact == plain).all()
    assert table.delta.tolist() == pytest.approx((table.accuracy - plain).tolist())


def test_ablating_one_pathway_equals_zeroing_it_by_hand(mpnet, data):
    table = ablation_table(mpnet, lambda: data, scope="each").set_index(["target", "pathway"])
    for block, label in [("s0.b0", "min"), ("s2.b1", "max"), ("s3.b0", "min")]:
        assert table.loc[(block, label), "accuracy"] == manual_accuracy(mpnet, data, [(block, label)])
    ends = pathway_ends(mpnet)
    ends["s1.b0"]["max"].ablate = True
    try:
        x = data[0][0]
        with torch.no_grad():
            assert torch.equal(mpnet(x), manual_logits(mpnet, x, {("s1.b0", "max")}))
    finally:
        ends["s1.b0"]["max"].ablate = False


def test_ablating_a_label_everywhere(mpnet, data):
    table = ablation_table(mpnet, lambda: data, scope="all").set_index(["target", "pathway"])
    blocks = [f"s{s}.b{b}" for s in range(4) for b in range(2)]
    assert table.loc[("all", "max"), "accuracy"] == manual_accuracy(mpnet, data, [(b, "max") for b in blocks])
    assert sorted(table.index.tolist()) == [("all", "max"), ("all", "min"), ("intact", "none")]


def test_last_tap_of_each_pathway_is_the_target(mpnet):
    ends = pathway_ends(mpnet)
    assert ends["s0.b1"]["max"].point.name == "s0.b1.max.1"
    assert ends["s0.b1"]["min"].point.name == "s0.b1.min.0"


def test_flags_restored_even_on_error(mpnet, data):
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("test data went away")
        return data

    with pytest.raises(RuntimeError):
        ablation_table(mpnet, flaky)
    assert not any(t.ablate for t in taps(mpnet))
    ablation_table(mpnet, lambda: data)
    assert not any(t.ablate for t in taps(mpnet))


def test_finetune_trains_a_copy_and_reevaluates_it(mpnet, data):
    state = copy.deepcopy(mpnet.state_dict())
    plan = FineTune(train_batches_fn=lambda: data, epochs=2, lr=0.5, momentum=0.0)
    table = ablation_table(mpnet, lambda: data, scope="all", finetune=plan).set_index(["target", "pathway"])
    assert all(torch.equal(state[k], v) for k, v in mpnet.state_dict().items())  # the model is untouched
    assert not any(t.ablate for t in taps(mpnet))
    ends = pathway_ends(mpnet)
    for end in ends.values():
        end["max"].ablate = True
    try:
        tuned = finetuned_copy(mpnet, plan)
    finally:
        for end in ends.values():
            end["max"].ablate = False
    changed = [k for k, v in tuned.state_dict().items() if v.is_floating_point() and not torch.equal(v, state[k])]
    assert any(k.endswith("conv.weight") for k in changed) and any(k.startswith("head") for k in changed)
    row = table.loc[("all", "max")]
    assert row.accuracy_finetuned == accuracy(tuned, data)  # recomputed on the tuned copy, same SGD path
    assert row.accuracy_finetuned != row.accuracy and row.delta_finetuned == row.accuracy_finetuned - row.accuracy_intact


def test_trunk_only_model_has_only_the_intact_row():
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 3, (8,), generator=g))]
    model = build_model("VGG16", 3, input_size=32, widths=(2, 2, 2, 2, 2), fc_width=4).eval()
    table = ablation_table(model, lambda: batches, depth_ratio=2.0)
    assert table.target.tolist() == ["intact"]


class Residual(nn.Module):
    """stem -> one residual block (conv, branch output: pathway 'branch') -> add -> head."""

    def __init__(self):
        super().__init__()
        point = lambda name, pathway, pos, kind: ProbePoint(name, 0, 0, pathway, pos, kind, 1, 1, 1)
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Tap(point("stem", "trunk", 0, "conv")))
        self.branch = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), Tap(point("s0.b0.conv", "branch", 0, "conv")),
                                    nn.Conv2d(4, 4, 3, padding=1), Tap(point("s0.b0.branch", "branch", 1, "conv")))
        self.add_tap = Tap(point("s0.b0.add", "trunk", 1, "add"))
        self.head = nn.Linear(4, 3)

    def forward(self, x, with_branch=True):
        h = self.stem(x)
        h = self.add_tap(h + self.branch(h)) if with_branch else h
        return self.head(h.mean((2, 3)))


def test_removing_a_residual_branch_leaves_the_shortcut(data):
    torch.manual_seed(0)
    model = Residual().eval()
    ends = pathway_ends(model)
    assert {b: {k: t.point.name for k, t in e.items()} for b, e in ends.items()} == {"s0.b0": {"branch": "s0.b0.branch"}}
    assert unit_roles(model, 2.0) == {"branch": "bypassed"}
    table = ablation_table(model, lambda: data, scope="each", depth_ratio=2.0).set_index(["target", "pathway"])
    with torch.no_grad():
        shortcut = sum((model(x, with_branch=False).argmax(1) == y).sum().item() for x, y in data) / 60
    assert table.loc[("s0.b0", "branch"), "accuracy"] == shortcut
    assert table.loc[("s0.b0", "branch"), "role"] == "bypassed" and "non-dominant" not in table.index.get_level_values(0)


def test_summary_row_removes_the_predicted_non_dominant_pathway_everywhere(data):
    torch.manual_seed(2)
    model = build_model("MPNet2(1:3x3,4:7x7)", 3, input_size=8, widths=(4, 4, 4, 4)).eval()
    assert unit_roles(model, 2.0) == {"min": "dominant", "max": "non-dominant"}
    table = ablation_table(model, lambda: data, scope="each", depth_ratio=2.0)
    summary = table[table.target == "non-dominant"].iloc[0]
    blocks = [f"s{s}.b{b}" for s in range(4) for b in range(2)]
    assert (summary.pathway, summary.role) == ("max", "non-dominant")
    assert summary.accuracy == manual_accuracy(model, data, [(b, "max") for b in blocks])
    each = table[(table.pathway == "max") & (table.target != "non-dominant")]
    assert len(each) == 8 and summary.delta_block_mean == pytest.approx(each.delta.mean())
    assert set(table.loc[table.pathway == "min", "role"]) == {"dominant"}
    alone = ablation_table(model, lambda: data, scope="all", depth_ratio=2.0).set_index("target")  # measured anew
    assert alone.loc["non-dominant", "delta_block_mean"] == pytest.approx(summary.delta_block_mean)


def test_coexisting_pathways_get_no_summary_row(mpnet, data):
    table = ablation_table(mpnet, lambda: data, scope="all", depth_ratio=2.0)  # 1 vs 2 layers: coexisting
    assert "non-dominant" not in set(table.target) and set(table.role) == {"", "coexisting"}


def test_bad_scope():
    model = build_model("MPNet1(1:3x3,1:5x5)", 3, input_size=8, widths=(2, 2, 2, 2))
    with pytest.raises(ConfigError, match="scope"):
        ablation_table(model, lambda: [], scope="some")
