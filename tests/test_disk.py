"""Disk estimate (flowprobe.disk), `flowprobe disk`, the workflow's start-up print and
keep_activations: false (activations.h5 as a snakemake temp file)."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from flowprobe.activations import dump_activations
from flowprobe.cli import main
from flowprobe.config import load_config
from flowprobe.data import load_dataset
from flowprobe.disk import disk_table, split_images, startup_report
from flowprobe.models import build_model

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"


def config_with(runs: dict, **top) -> dict:
    return load_config({"runs": runs, **top})


def test_images_per_split_follow_the_dataset_and_max_per_class(imagefolder_root):
    run = config_with({"a": {"model": "VGG16"}})["runs"]["a"]
    assert [sum(s) for s in split_images(run, "data", None)] == [50_000, 10_000]
    assert [sum(s) for s in split_images({**run, "dataset": "imagenette"}, "data", None)] == [9_469, 3_925]
    assert [sum(s) for s in split_images({**run, "dataset": "mnist"}, "data", 100)] == [1_000, 1_000]
    folder = {**run, "dataset": "imagefolder", "dataset_root": str(imagefolder_root)}
    assert split_images(folder, "data", None) == ([4, 4, 4], [2, 2, 2])  # counted, 3 class folders
    assert split_images(folder, "data", 3) == ([3, 3, 3], [2, 2, 2])
    assert split_images({**folder, "max_images": 7}, "data", None) == ([3, 2, 2], [2, 2, 2])
    assert [sum(s) for s in split_images({**run, "max_images": 4}, "data", None)] == [4, 4]


def test_estimate_is_the_independent_formula_and_bounds_a_real_dump(tmp_path):
    """VGG16 at widths (2,3,4,4,4): 13 conv points of C·16 values, fc1 of 5 values; every one
    has a pre-BN output of the same size; float16; 10 float32 logits; int64 label + index."""
    widths, fc = (2, 3, 4, 4, 4), 5
    convs = [2, 2, 3, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4]
    values = 16 * sum(convs) + fc
    runs = {"v": {"model": "VGG16", "dataset": "cifar10-mini", "max_per_class": 3,
                  "model_options": {"widths": list(widths), "fc_width": fc}, "seeds": [0, 1]}}
    config = config_with(runs, activations={"dtype": "float16"})
    row = disk_table(config).iloc[0]
    assert row["bytes_per_image"] == 2 * 2 * values + 4 * 10 + 16
    assert row["images"] == 60 and row["seeds"] == 2
    assert row["gib"] == pytest.approx(2 * 60 * row["bytes_per_image"] / 2**30)
    torch.manual_seed(0)
    model = build_model("VGG16", 10, widths=widths, fc_width=fc)
    assert row["parameters"] == sum(p.numel() for p in model.parameters())
    path = tmp_path / "a.h5"
    data = load_dataset("cifar10-mini", max_per_class=3)
    dump_activations(model, data, path, attrs={"seed": 0, "resolution": 32, "test_accuracy": 0.0},
                     dtype="float16", prebn=True, device="cpu", progress=False)
    payload = 60 * row["bytes_per_image"]
    assert payload <= path.stat().st_size <= payload + 256 * 1024  # HDF5 headers and attributes only


def test_prebn_and_float32_change_the_estimate():
    runs = {"v": {"model": "VGG16", "model_options": {"widths": [2, 3, 4, 4, 4], "fc_width": 5}}}
    full = {"dtype": "float32"}
    post = disk_table(config_with(runs, activations=full, saturation={"source": "postrelu_avgpool4"}))
    post = post.iloc[0]["bytes_per_image"]
    pre = disk_table(config_with(runs, activations=full)).iloc[0]["bytes_per_image"]
    half = disk_table(config_with(runs, activations={"dtype": "float16"})).iloc[0]["bytes_per_image"]
    stored = pre - 4 * 10 - 16
    assert stored == 2 * (post - 4 * 10 - 16)  # pre-BN maps double the stored values here
    assert half - 4 * 10 - 16 == stored // 2


def test_startup_report_names_every_run_and_the_total():
    runs = {"one": {"model": "AlainMLP", "dataset": "mnist", "resolution": 28, "channels": 1},
            "two": {"model": "AlainMLP", "dataset": "mnist", "resolution": 28, "channels": 1, "seeds": [0, 1]}}
    text = startup_report(config_with(runs, keep_activations=False))
    table = disk_table(config_with(runs))
    assert f"one {table['gib'][0]:.2f}" in text and f"two {table['gib'][1]:.2f}" in text
    assert f"total {table['gib'].sum():.1f} GiB" in text and "deleted after use" in text
    assert len(text.splitlines()) == 2
    assert "more than is free" not in text
    huge = config_with({"big": {"model": "VGG16", "seeds": list(range(400))}})  # 400 × 15 GiB
    assert "more than is free: set keep_activations: false" in startup_report(huge)


def test_disk_command_prints_the_table(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"runs": {"mlp": {"model": "AlainMLP", "dataset": "mnist", "resolution": 28,
                                                        "channels": 1}}}))
    assert main(["disk", str(config)]) == 0
    out = capsys.readouterr().out
    row = disk_table(load_config(yaml.safe_load(config.read_text()))).iloc[0]
    assert f"| mlp | AlainMLP | mnist 28px | {row['parameters']:,} | {row['bytes_per_image']:,} | 70,000 | 1 |" in out
    assert main(["disk", str(tmp_path / "missing.yaml")]) == 2
    assert "no such config file" in capsys.readouterr().err


@pytest.mark.workflow
def test_dry_run_prints_the_estimate_and_temp_activations_are_deleted(tmp_path):
    config = {
        "data_root": "data", "keep_activations": False,
        "defaults": {"dataset": "cifar10-mini", "max_per_class": 4, "train": {"epochs": 1, "batch_size": 20}},
        "runs": {"mlp": {"model": "AlainMLP", "channels": 1, "model_options": {"span": 2, "width": 8, "depth": 1}}},
        "probes": {"l2_grid": [0.1], "max_iter": 10},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    shutil.copytree(ROOT / "data", tmp_path / "data", dirs_exist_ok=True)
    run = "results/runs/mlp/seed0"
    cmd = [str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "-d", str(tmp_path), "--cores", "1",
           f"{run}/saturation.csv", f"{run}/probes.csv", "--configfile", str(tmp_path / "c.yaml")]
    dry = subprocess.run([*cmd, "-n"], capture_output=True, text=True, timeout=600)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert "flowprobe: activations.h5 total" in dry.stderr and "deleted after use" in dry.stderr
    real = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert real.returncode == 0, real.stderr[-3000:]
    assert real.stderr.count("flowprobe: activations.h5 total") == 1  # the main process only, not each job
    assert (tmp_path / run / "saturation.csv").exists() and (tmp_path / run / "probes.csv").exists()
    assert not (tmp_path / run / "activations.h5").exists()  # temp(): removed once both readers ran
    assert (tmp_path / run / "model.pt").exists()
