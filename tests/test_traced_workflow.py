"""End to end on a torchvision model: real `snakemake` trains torchvision:resnet18 (tiny) through to
figures, and a second run analyses a checkpoint without training it."""
import subprocess
import sys
from pathlib import Path

import h5py
import pandas as pd
import pytest
import torch
import yaml
from snakemake_stats import job_stats

from flowprobe.models import build_model

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
pytestmark = pytest.mark.workflow

CONFIG = {
    "data_root": "data",
    "defaults": {"dataset": "cifar10-mini", "max_per_class": 6, "resolution": 32, "seeds": [0],
                 "train": {"epochs": 1, "batch_size": 30, "lr": 0.02, "momentum": 0.9}},
    "runs": {
        "tv": {"model": "torchvision:resnet18"},
        "tvck": {"model": "torchvision:resnet18", "checkpoint": "resnet18_state.pt"},
    },
    "activations": {"batch_size": 60, "max_per_class": 4},
    "probes": {"l2_grid": [0.1], "max_iter": 20},
    "gradients": {"batch_size": 30, "max_batches": 1},
    "figures": {
        "paths": {"kind": "pathway_probes", "runs": ["tv"]},
        "lesion": {"kind": "ablation", "runs": ["tvck"]},
    },
}


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--cores", "2",
           "--configfile", str(workdir / "config.yaml"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("traced")
    (path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    torch.manual_seed(5)  # a plain torchvision state dict, as a user would bring one
    state = build_model("torchvision:resnet18", 10).state_dict()
    torch.save(state, path / "resnet18_state.pt")
    proc = snakemake(path, "-n")
    dry = job_stats(proc.stdout + proc.stderr)
    assert dry["train"] == 1 and dry["import_checkpoint"] == 1, dry
    snakemake(path)
    return path


def test_checkpoint_run_starts_at_the_dump(workdir):
    run = workdir / "results/runs/tvck/seed0"
    assert not (workdir / "results/logs/train/tvck_seed0.log").exists()
    log = pd.read_csv(run / "train_log.csv")
    assert log["epoch"].tolist() == [0] and 0 <= log["test_acc"].iloc[0] <= 1
    record = torch.load(run / "model.pt", map_location="cpu", weights_only=False)
    saved = torch.load(workdir / "resnet18_state.pt", map_location="cpu")
    assert all(torch.equal(record["state_dict"][k], v) for k, v in saved.items())


def test_pathways_reach_the_figures(workdir):
    with h5py.File(workdir / "results/runs/tv/seed0/activations.h5") as h5:
        pathways = {h5["layers"][name].attrs["pathway"] for name in h5["layers"]}
    assert pathways == {"trunk", "branch", "skip"}
    paths = pd.read_csv(workdir / "results/tables/paths.csv")
    assert set(paths["pathway"]) == {"trunk", "branch", "skip"}
    assert paths["model"].unique().tolist() == ["torchvision:resnet18"]
    lesion = pd.read_csv(workdir / "results/tables/lesion.csv")
    assert {"branch", "skip"} <= set(lesion["pathway"])
    for fig in CONFIG["figures"]:
        pdf = workdir / "results" / "figures" / f"{fig}.pdf"
        assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 5000, fig
