"""ablation_table: zeroing a pathway equals removing it by hand; flags always restored."""

import copy

import pytest
import torch

from flowprobe.analysis.ablation import ABLATION_COLUMNS, FineTune, ablation_table, pathway_ends
from flowprobe.errors import ConfigError
from flowprobe.models import build_model, taps



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


def test_finetune_works_on_a_copy(mpnet, data):
    state = copy.deepcopy(mpnet.state_dict())
    plan = FineTune(train_batches_fn=lambda: data[:1], epochs=1, lr=0.05)
    table = ablation_table(mpnet, lambda: data, scope="all", finetune=plan)
    assert {"accuracy_finetuned", "delta_finetuned"} <= set(table.columns)
    assert table.accuracy_finetuned.between(0, 1).all()
    assert all(torch.equal(state[k], v) for k, v in mpnet.state_dict().items())
    assert not any(t.ablate for t in taps(mpnet))


def test_trunk_only_model_has_only_the_intact_row(data):
    model = build_model("ResNet18", 3, input_size=8, widths=(2, 2, 2, 2)).eval()
    table = ablation_table(model, lambda: data)
    assert table.target.tolist() == ["intact"]


def test_bad_scope():
    model = build_model("MPNet1(1:3x3,1:5x5)", 3, input_size=8, widths=(2, 2, 2, 2))
    with pytest.raises(ConfigError, match="scope"):
        ablation_table(model, lambda: [], scope="some")
