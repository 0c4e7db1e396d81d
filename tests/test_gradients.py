"""gradient_table: agrees with a hand-written backward pass and leaves the model untouched."""

import copy

import pytest
import torch
import torch.nn.functional as F

from flowprobe.analysis.gradients import GRADIENT_COLUMNS, gradient_table
from flowprobe.errors import AnalysisError, ConfigError
from flowprobe.models import build_model



@pytest.fixture
def mpnet():
    torch.manual_seed(0)
    model = build_model("MPNet1(1:3x3,2:5x5)", 4, input_size=16, widths=(3, 3, 4, 4))
    # train a little so BN running statistics are not the defaults
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 16, 16))
    return model


def batches(n=2, size=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, 16, 16, generator=g), torch.randint(0, 4, (size,), generator=g)) for _ in range(n)]


def manual_gradients(model, data):
    """Re-run the MPNet forward by hand, retain_grad on the stem and first merge, backward."""
    model.eval()
    stem, first = [], []
    for x, y in data:
        h = model.stem(x)
        h.retain_grad()
        b = model.stages[0][0](h)
        b.retain_grad()
        out = b
        for stage in model.stages[1:]:
            out = stage(out)
        logits = model.head(torch.flatten(model.pool(out), 1))
        F.cross_entropy(logits, y, reduction="sum").backward()
        stem.append(h.grad.abs().mean().item())
        first.append(b.grad.abs().mean().item())
    model.zero_grad(set_to_none=True)
    return sum(stem) / len(stem), sum(first) / len(first)


def test_matches_manual_backward(mpnet):
    data = batches()
    table = gradient_table(mpnet, data).set_index("probe_point")
    stem, first = manual_gradients(copy.deepcopy(mpnet), data)
    assert table.loc["stem", "mean_abs_grad"] == pytest.approx(stem, rel=1e-5)
    assert table.loc["s0.b0.add", "mean_abs_grad"] == pytest.approx(first, rel=1e-5)
    assert (table.n_batches == 2).all()
    assert list(table.reset_index().columns) == GRADIENT_COLUMNS


def test_model_is_left_untouched(mpnet):
    mpnet.train()
    state = copy.deepcopy(mpnet.state_dict())
    gradient_table(mpnet, batches())
    assert mpnet.training
    assert all(torch.equal(state[k], v) for k, v in mpnet.state_dict().items())  # BN buffers too
    assert all(p.grad is None for p in mpnet.parameters())


def test_independent_of_batching(mpnet):
    one = batches(n=1, size=6)
    x, y = one[0]
    two = [(x[:3], y[:3]), (x[3:], y[3:])]
    a = gradient_table(mpnet, one).mean_abs_grad.to_numpy()
    b = gradient_table(mpnet, two).mean_abs_grad.to_numpy()
    assert a == pytest.approx(b, rel=1e-5)


def test_forward_order_and_metadata(mpnet):
    table = gradient_table(mpnet, batches(n=1))
    assert table.probe_point.tolist()[:5] == ["stem", "s0.b0.min.0", "s0.b0.max.0", "s0.b0.max.1", "s0.b0.add"]
    assert table.set_index("probe_point").loc["s0.b0.max.1", "pathway"] == "max"
    assert (table.mean_abs_grad >= 0).all()
    assert (table.mean_abs_grad > 0).sum() >= len(table) - 2  # a 4-channel unit may be all-dead


def test_selected_points_and_errors(mpnet):
    table = gradient_table(mpnet, batches(n=1), probe_points=["s0.b0.add", "stem"])
    assert table.probe_point.tolist() == ["stem", "s0.b0.add"]
    with pytest.raises(ConfigError, match="nope"):
        gradient_table(mpnet, batches(n=1), probe_points=["nope"])
    with pytest.raises(AnalysisError, match="no batches"):
        gradient_table(mpnet, [])


def test_mlp_gradient_at_the_skip():
    torch.manual_seed(0)
    model = build_model("AlainMLP", 4, in_channels=1, input_size=8, width=6, span=3, depth=1)
    x, y = torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 2, 3, 0])
    table = gradient_table(model, [(x, y)]).set_index("probe_point")
    first = model.first(torch.flatten(x, 1))
    merged = first + model.span(first)
    merged.retain_grad()
    F.cross_entropy(model.head(model.tail(merged)), y, reduction="sum").backward()
    assert table.loc["add", "mean_abs_grad"] == pytest.approx(merged.grad.abs().mean().item(), rel=1e-5)


def test_frozen_parameters_still_give_gradients(mpnet):
    expected = gradient_table(mpnet, batches(n=1)).mean_abs_grad.to_numpy()
    for p in mpnet.parameters():
        p.requires_grad_(False)
    assert gradient_table(mpnet, batches(n=1)).mean_abs_grad.to_numpy() == pytest.approx(expected)
