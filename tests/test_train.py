"""Training: logs, divergence, and resume after a real kill reaching the same weights."""
import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from flowprobe.data import load_dataset
from flowprobe.errors import TrainingError
from flowprobe.models import build_model
from flowprobe.train import LOG_COLUMNS, TrainSettings, evaluate, train_model
from flowprobe.data import Batches

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


def test_divergence_can_be_recorded(tiny, tmp_path):
    _, summary = _train(tiny, tmp_path, epochs=2, lr=1e30, on_divergence="record")
    assert summary["diverged"] and "learning rate" in summary["diverged_at"]
    rows = list(csv.DictReader((tmp_path / "log.csv").open()))
    assert rows[-1]["diverged"] == "1" and rows[-1]["test_acc"] == "nan"


KILLABLE = """
import sys, torch
from flowprobe.data import load_dataset
from flowprobe.models import build_model
from flowprobe.train import TrainSettings, train_model
data = load_dataset("cifar10-mini", max_per_class=40)
torch.manual_seed(0)
model = build_model("{spec}", 10, widths={widths})
settings = TrainSettings(epochs=4, batch_size=16, lr=0.05, momentum=0.9, lr_step=2)
train_model(model, data, settings, seed=0, log_path=sys.argv[1] + "/log.csv",
            checkpoint_path=sys.argv[1] + "/ckpt.pt", device="cpu", progress=False)
torch.save(model.state_dict(), sys.argv[1] + "/final.pt")
"""


def test_killed_training_resumes_to_identical_weights(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(KILLABLE.format(spec=SPEC, widths=WIDTHS))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # Uninterrupted reference run.
    subprocess.run([sys.executable, script, tmp_path / "a"], check=True, env=env)
    # Killed as soon as the first epoch's checkpoint exists, then rerun: resumes from it.
    proc = subprocess.Popen([sys.executable, script, tmp_path / "b"], env=env)
    ckpt = tmp_path / "b" / "ckpt.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run must really be killed mid-training"
    assert not (tmp_path / "b" / "final.pt").exists()
    done = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= done < 4
    subprocess.run([sys.executable, script, tmp_path / "b"], check=True, env=env)
    ref = torch.load(tmp_path / "a" / "final.pt", weights_only=True)
    resumed = torch.load(tmp_path / "b" / "final.pt", weights_only=True)
    for name in ref:
        assert torch.equal(ref[name], resumed[name]), name
    rows = list(csv.DictReader((tmp_path / "b" / "log.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]


def test_adam_option_trains_and_differs_from_sgd(tiny, tmp_path):
    sgd, _ = _train(tiny, tmp_path / "a", epochs=1)
    adam, summary = _train(tiny, tmp_path / "b", epochs=1, optimizer="adam", lr=1e-3)
    assert 0 <= summary["test_accuracy"] <= 1
    assert any(not torch.equal(p, q) for p, q in zip(sgd.state_dict().values(), adam.state_dict().values()))
