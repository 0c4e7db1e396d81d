"""Smoke mode: the paper config (config.yaml: every run at its real widths and resolutions, every
figure) through real `snakemake` on fabricated CIFAR-10, MNIST and ImageNette archives, offline."""
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pandas as pd
import pytest
import yaml
from conftest import write_paper_data
from snakemake_stats import job_stats

from flowprobe.config import SMOKE_BATCH, SMOKE_IMAGES, load_config

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
pytestmark = pytest.mark.workflow


def paper_config() -> dict:
    """config.yaml as the workflow reads it in smoke mode (runs and figures are never hard-coded here)."""
    return load_config({**yaml.safe_load((ROOT / "config.yaml").read_text()), "smoke": True})


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    write_paper_data(data)
    work = tmp_path_factory.mktemp("smoke")
    cmd = [str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "-d", str(work), "--cores", "2",
           "--config", "smoke=true", f"data_root={data}", "download=false"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise AssertionError(f"smoke run failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    print(f"paper config, smoke mode: {seconds:.0f} s on 2 cores")
    return work, proc


def test_every_figure_of_the_paper_config(smoke_run):
    work, proc = smoke_run
    config = paper_config()
    for name in config["figures"]:
        assert (work / "results" / "figures" / f"{name}.pdf").read_bytes()[:5] == b"%PDF-", name
        table = pd.read_csv(work / "results" / "tables" / f"{name}.csv")
        assert set(table["run"]) == set(config["figures"][name]["runs"]), name
    assert (work / "results" / "tables" / "verdicts.csv").exists()
    assert "Traceback" not in proc.stderr and "Exception" not in proc.stderr


def test_each_run_trains_one_epoch_and_dumps_a_few_images_at_its_real_size(smoke_run):
    work, _ = smoke_run
    config = paper_config()
    used = {run for figure in config["figures"].values() for run in figure["runs"]}
    for name in used:
        folder = work / "results" / "runs" / name / "seed0"
        assert len(pd.read_csv(folder / "train_log.csv")) == 1, name
        with h5py.File(folder / "activations.h5") as h5:
            assert len(h5["labels/train"]) == len(set(h5["labels/train"][:])) == SMOKE_IMAGES, name
            assert h5.attrs["resolution"] == config["runs"][name]["resolution"], name
    for name in config["figures"]["ablation"]["runs"]:
        log = (work / "results" / "logs" / "ablation" / f"{name}_seed0.log").read_text()
        assert f"ablations evaluated on {SMOKE_BATCH} of the {SMOKE_IMAGES} test images (ablation.max_images)" in log, name


def dry_run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "-n", "--cores", "1", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("configfile", [None, "config/demo.yaml"])
def test_dry_run_prints_no_exception_and_each_target_has_one_rule(tmp_path, configfile):
    """Every target maps to one rule: verdicts.csv only to `verdicts`, never also to `table`."""
    proc = dry_run(tmp_path, *(["--configfile", str(ROOT / configfile)] if configfile else []))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "Exception" not in log and "Traceback" not in log, log[-3000:]
    figures = load_config(yaml.safe_load((ROOT / (configfile or "config.yaml")).read_text()))["figures"]
    counts = job_stats(log)
    assert counts["table"] == counts["figure"] == len(figures) and counts["verdicts"] == 1


def test_a_table_no_figure_names_is_no_job_of_the_table_rule(tmp_path):
    proc = dry_run(tmp_path, "results/tables/not_a_figure.csv", "--configfile", str(ROOT / "config/demo.yaml"))
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "MissingRuleException" in log
    assert "InputFunctionException" not in log and "KeyError" not in log
