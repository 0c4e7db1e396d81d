"""No silent wrong results, no needless reruns, on real snakemake runs (issue 11).

- A training job killed mid-run (SIGKILL to snakemake's whole process group, as a preemption
  does) and rerun with --rerun-incomplete ends with the weights of an uninterrupted run, bit for
  bit on CPU: VGG16 (dropout) and an MPNet.
- Killed, then `train.lr` changed: the old checkpoint is moved aside, the weights equal a fresh
  run at the new lr.
- The demo config with its keys sorted and every default written out schedules nothing.
- A probe setting changed while the DAG runs: every output afterwards is of the new setting.
"""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from snakemake_stats import job_stats

from flowprobe.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
pytestmark = pytest.mark.workflow

# Tiny models, 300 training images: an epoch takes a fraction of a second on one thread, so a
# 5-epoch job is long enough to be killed between two checkpoints.
CONFIG = {
    "data_root": "data",
    "defaults": {
        "dataset": "cifar10-mini",
        "max_per_class": 30,
        "train": {"epochs": 5, "batch_size": 16, "lr": 0.05, "momentum": 0.9, "lr_step": 2},
    },
    "runs": {
        "vgg": {"model": "VGG16", "model_options": {"widths": [4, 4, 8, 8, 8], "fc_width": 16}},
        "mp": {"model": "MPNet1(1:3x3, 2:3x3)", "model_options": {"widths": [4, 4, 8, 8]}},
    },
}
RUN = "results/runs/{run}/seed0"


def _workdir(tmp_path: Path, name: str, config: dict) -> Path:
    path = tmp_path / name
    path.mkdir()
    (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _command(workdir: Path, targets, *args) -> list[str]:
    return [str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--cores", "1", *targets,
            *args, "--configfile", str(workdir / "config.yaml")]


def snakemake(workdir: Path, targets=(), *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(_command(workdir, targets, *args), capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    if proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def kill_when(workdir: Path, targets, ready, timeout: float = 300) -> None:
    """Start snakemake in its own session, SIGKILL its process group once `ready()` holds."""
    proc = subprocess.Popen(_command(workdir, targets), start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ, OMP_NUM_THREADS="1"))
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "snakemake ended before it could be killed"
    snakemake(workdir, (), "--unlock")


def _epochs_logged(workdir: Path, run: str) -> int:
    log = workdir / RUN.format(run=run) / "train_log.partial.csv"
    return max(len(log.read_text().splitlines()) - 1, 0) if log.exists() else 0


def _weights(workdir: Path, run: str) -> dict:
    return torch.load(workdir / RUN.format(run=run) / "model.pt", weights_only=False)["state_dict"]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _kill_mid_training(workdir: Path, run: str) -> int:
    """Kill the training of `run` after its second epoch; returns the epochs its checkpoint holds."""
    target = RUN.format(run=run) + "/model.pt"
    kill_when(workdir, [target], lambda: _epochs_logged(workdir, run) >= 2)
    checkpoint = workdir / RUN.format(run=run) / "checkpoint.pt"
    done = torch.load(checkpoint, weights_only=True)["epoch"]
    assert not (workdir / target).exists() and 1 <= done < 5, "killed mid-training"
    return done


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Both models trained without interruption."""
    workdir = _workdir(tmp_path_factory.mktemp("ref"), "ref", CONFIG)
    snakemake(workdir, [RUN.format(run=run) + "/model.pt" for run in CONFIG["runs"]])
    return workdir


@pytest.mark.parametrize("run", ["vgg", "mp"])
def test_killed_training_resumes_to_bit_identical_weights(reference, tmp_path, run):
    workdir = _workdir(tmp_path, "killed", CONFIG)
    done = _kill_mid_training(workdir, run)
    snakemake(workdir, [RUN.format(run=run) + "/model.pt"], "--rerun-incomplete")
    _assert_same_weights(_weights(reference, run), _weights(workdir, run))
    log = (workdir / f"results/logs/train/{run}_seed0.log").read_text()
    assert f"resumed from epoch {done}" in log and log.startswith("==== flowprobe train | run ")
    assert "\r" not in log  # progress as lines, no carriage-return bars
    rows = pd.read_csv(workdir / RUN.format(run=run) / "train_log.csv")
    assert list(rows["epoch"]) == [1, 2, 3, 4, 5]
    assert not (workdir / RUN.format(run=run) / "checkpoint.pt").exists()


def test_checkpoint_of_old_lr_is_not_resumed(tmp_path):
    config = {**CONFIG, "runs": {"vgg": CONFIG["runs"]["vgg"]}}
    new_lr = yaml.safe_load(yaml.safe_dump(config))
    new_lr["defaults"]["train"]["lr"] = 0.01
    fresh = _workdir(tmp_path, "fresh", new_lr)
    snakemake(fresh, [RUN.format(run="vgg") + "/model.pt"])
    workdir = _workdir(tmp_path, "changed", config)
    _kill_mid_training(workdir, "vgg")
    (workdir / "config.yaml").write_text(yaml.safe_dump(new_lr))
    snakemake(workdir, [RUN.format(run="vgg") + "/model.pt"], "--rerun-incomplete")
    _assert_same_weights(_weights(fresh, "vgg"), _weights(workdir, "vgg"))
    log = (workdir / "results/logs/train/vgg_seed0.log").read_text()
    assert "started fresh (checkpoint of other settings: train.lr: 0.05 → 0.01; moved it to checkpoint.stale.pt)" in log
    assert (workdir / RUN.format(run="vgg") / "checkpoint.stale.pt").exists()
    assert (pd.read_csv(workdir / RUN.format(run="vgg") / "train_log.csv")["lr"] <= 0.01).all()


def _tiny_demo() -> dict:
    """config/demo.yaml cut to two runs of tiny width, one epoch, two figures: still the demo's
    key order (model_options {widths, fc_width}), defaults section and per-run overrides."""
    demo = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    demo["defaults"]["max_per_class"] = 4
    demo["defaults"]["train"]["epochs"] = 1
    demo["runs"] = {name: demo["runs"][name] for name in ("vgg16", "mlp")}
    demo["runs"]["vgg16"]["model_options"] = {"widths": [4, 4, 8, 8, 8], "fc_width": 16}
    demo["runs"]["mlp"]["model_options"] = {"span": 4, "width": 16}
    demo["figures"] = {name: demo["figures"][name] for name in ("fig1", "fig2")}
    return demo


def _spelled_out(config: dict) -> dict:
    """Every default written out (the config as load_config completes it, `train.optimizer`
    and `train.augment` included), one float default spelled as an int, keys sorted."""
    full = load_config(config)
    full["runs"]["mlp"]["train"]["weight_decay"] = 0
    return yaml.safe_load(yaml.safe_dump(full, sort_keys=True))


def test_sorted_keys_and_explicit_defaults_schedule_nothing(tmp_path):
    demo = _tiny_demo()
    workdir = _workdir(tmp_path, "demo", demo)
    snakemake(workdir)
    variant = _spelled_out(demo)
    assert list(variant["runs"]["vgg16"]["model_options"]) == ["fc_width", "widths"]
    assert variant["defaults"]["train"]["optimizer"] == "sgd" and variant["defaults"]["train"]["augment"] is True
    (workdir / "config.yaml").write_text(yaml.safe_dump(variant, sort_keys=True))
    dry = snakemake(workdir, (), "-n")
    assert job_stats(dry.stdout + dry.stderr) == {}, dry.stdout[-3000:]
    variant["runs"]["mlp"]["train"]["lr"] = 2e-3  # a real change is still seen
    (workdir / "config.yaml").write_text(yaml.safe_dump(variant, sort_keys=True))
    dry = snakemake(workdir, (), "-n")
    assert job_stats(dry.stdout + dry.stderr).get("train") == 1


def test_probe_setting_changed_mid_run_leaves_one_setting(reference, tmp_path):
    """On a copy of the trained reference (training is not what this test is about)."""
    workdir = tmp_path / "dag"
    shutil.copytree(reference, workdir)
    config = {**CONFIG, "probes": {"l2_grid": [1.0e-2, 1.0e-1], "max_iter": 30},
              "figures": {"both": {"kind": "layer_probes", "runs": ["vgg", "mp"]}}}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    probes = [workdir / RUN.format(run=run) / "probes.csv" for run in ("vgg", "mp")]
    kill_when(workdir, ["results/tables/both.csv"], lambda: any(p.exists() for p in probes))
    config["probes"]["l2_grid"] = [0.5]
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    snakemake(workdir, ["results/tables/both.csv"], "--rerun-incomplete")
    for run in ("vgg", "mp"):
        assert (pd.read_csv(workdir / RUN.format(run=run) / "probes.csv")["l2"] == 0.5).all(), run
    table = pd.read_csv(workdir / "results/tables/both.csv")
    assert set(table["run"]) == {"vgg", "mp"} and (table["l2"] == 0.5).all()
    for run in ("vgg", "mp"):  # a probe setting never retrains
        model = RUN.format(run=run) + "/model.pt"
        assert (workdir / model).stat().st_mtime_ns == (reference / model).stat().st_mtime_ns, run
