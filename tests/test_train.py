"""Training: logs, divergence, optimizers against bare torch, checkpoints of one setting.

The kill-and-resume tests on real snakemake runs are in tests/test_resume.py.
"""
import copy
import csv
import logging
from dataclasses import asdict

import pytest
import torch

from flowprobe.config import DEFAULTS
from flowprobe.data import Batches, load_dataset
from flowprobe.data.loader import MODEL_STREAM, stream_seed
from flowprobe.errors import TrainingError
from flowprobe.models import build_model
from flowprobe.train import LOG_COLUMNS, TrainSettings, evaluate, train_model

SPEC, WIDTHS = "MPNet1(1:3x3, 1:5x5)", (4, 4, 8, 8)


@pytest.fixture(scope="module")
def tiny():
    return load_dataset("cifar10-mini", max_per_class=6)


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model(SPEC, 10, widths=WIDTHS)


def _train(tiny, tmp_path, epochs=2, **kw):
    model = _model()
    settings = TrainSettings(**{"epochs": epochs, "batch_size": 16, "lr": 0.05, "momentum": 0.9, "lr_step": 1, **kw})
    summary = train_model(
        model, tiny, settings, seed=0, log_path=tmp_path / "log.csv",
        checkpoint_path=tmp_path / "ckpt.pt", device="cpu", progress=False,
    )
    return model, summary


def test_train_log_has_one_row_per_epoch_and_lr_schedule(tiny, tmp_path):
    model, summary = _train(tiny, tmp_path, epochs=3)
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert list(rows[0]) == LOG_COLUMNS
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.05, 0.005, 0.0005])  # ×0.1 every lr_step=1
    for r in rows:
        assert 0 <= float(r["test_acc"]) <= 1 and float(r["train_loss"]) > 0
    test = Batches(tiny.test, batch_size=7, mean=tiny.mean, std=tiny.std)
    assert summary["test_accuracy"] == pytest.approx(evaluate(model, test)[1])
    assert float(rows[-1]["test_acc"]) == pytest.approx(summary["test_accuracy"])


def test_same_seed_same_weights(tiny, tmp_path):
    a, _ = _train(tiny, tmp_path / "a")
    b, _ = _train(tiny, tmp_path / "b")
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


@pytest.fixture(autouse=True)
def _mkdirs(tmp_path):
    for sub in ("a", "b", "c"):
        (tmp_path / sub).mkdir()


def test_nan_loss_stops_with_epoch_batch_and_lr(tiny, tmp_path):
    with pytest.raises(TrainingError) as info:
        _train(tiny, tmp_path, epochs=2, lr=1e30)
    message = str(info.value)
    assert "epoch 1" in message or "epoch 2" in message
    assert "batch" in message and "learning rate 1e+30" in message and "on_divergence" in message


def test_divergence_can_be_recorded_with_the_last_finished_weights(tiny, tmp_path):
    model, summary = _train(tiny, tmp_path, epochs=2, lr=1e30, on_divergence="record")
    assert summary["diverged"] and "epoch 1, batch 2," in summary["diverged_at"]  # batch 1 is the first step
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert rows[-1]["diverged"] == "1" and rows[-1]["test_acc"] == "nan"
    for (name, kept), initial in zip(model.state_dict().items(), _model().state_dict().values()):
        assert torch.equal(kept, initial), name  # diverged in epoch 1: the initial weights
    assert 0 <= summary["test_accuracy"] <= 1


def _bare_epoch(model, opt, data, settings, seed, epoch):
    """One epoch written with torch alone, drawing from the same (seed, epoch) streams."""
    torch.manual_seed(stream_seed(seed, epoch, MODEL_STREAM))
    batches = Batches(data.train, batch_size=settings.batch_size, mean=data.mean, std=data.std,
                      shuffle=True, augment=settings.augment, seed=seed)
    batches.set_epoch(epoch)
    model.train()
    for x, y in batches:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_equals_a_bare_torch_loop_with_that_optimizer(tiny, tmp_path, optimizer):
    """VGG16 has dropout, so this also checks the dropout stream; SGD and Adam at the same lr
    must each match torch's own optimizer (and so differ from each other)."""
    settings = TrainSettings(epochs=2, batch_size=16, lr=0.01, momentum=0.9, weight_decay=5e-4,
                             lr_step=1, lr_gamma=0.5, optimizer=optimizer, augment=True)
    torch.manual_seed(0)
    ours = build_model("VGG16", 10, widths=[4, 4, 8, 8, 8], fc_width=16)
    ref = copy.deepcopy(ours)
    train_model(ours, tiny, settings, seed=3, log_path=tmp_path / "log.csv",
                checkpoint_path=tmp_path / "ckpt.pt", device="cpu", progress=False)
    if optimizer == "adam":
        opt = torch.optim.Adam(ref.parameters(), lr=0.01, weight_decay=5e-4)
    else:
        opt = torch.optim.SGD(ref.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    for epoch in range(2):
        _bare_epoch(ref, opt, tiny, settings, seed=3, epoch=epoch)
        opt.param_groups[0]["lr"] *= 0.5
    for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(a, b), name


def test_checkpoint_of_other_lr_is_moved_aside_not_resumed(tiny, tmp_path, caplog):
    """A finished epoch-1 checkpoint at lr 0.05 must not count as epoch 1 of an lr-0.01 run."""
    _train(tiny, tmp_path / "a", epochs=1, lr=0.05)
    (tmp_path / "a" / "ckpt.pt").replace(tmp_path / "b" / "ckpt.pt")
    with caplog.at_level(logging.INFO, logger="flowprobe.train"):
        reused, _ = _train(tiny, tmp_path / "b", epochs=1, lr=0.01)
    fresh, _ = _train(tiny, tmp_path / "c", epochs=1, lr=0.01)
    for (name, a), b in zip(reused.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    assert (tmp_path / "b" / "ckpt.stale.pt").exists()
    assert "started fresh (checkpoint of other settings: train.lr: 0.05 → 0.01; moved it to ckpt.stale.pt)" in caplog.text


def test_resume_continues_and_says_so(tiny, tmp_path, caplog):
    """Two epochs then two more on the same checkpoint equal four straight epochs when the
    schedule is the same; the second call logs where it resumed."""
    straight, _ = _train(tiny, tmp_path / "a", epochs=4)
    _train(tiny, tmp_path / "b", epochs=4)
    state = torch.load(tmp_path / "b" / "ckpt.pt", weights_only=True)
    assert state["epoch"] == 4
    with caplog.at_level(logging.INFO, logger="flowprobe.train"):
        again, summary = _train(tiny, tmp_path / "b", epochs=4)
    assert "resumed from epoch 4" in caplog.text and summary["resumed_from"] == 4
    for (name, a), b in zip(straight.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_unreadable_checkpoint_is_moved_aside(tiny, tmp_path, caplog):
    (tmp_path / "ckpt.pt").write_bytes(b"half a checkpoint")
    with caplog.at_level(logging.INFO, logger="flowprobe.train"):
        _train(tiny, tmp_path, epochs=1)
    assert "started fresh (checkpoint unreadable" in caplog.text
    assert (tmp_path / "ckpt.stale.pt").read_bytes() == b"half a checkpoint"


def test_train_defaults_are_the_config_defaults():
    assert asdict(TrainSettings()) == DEFAULTS["defaults"]["train"]
