"""Resolution sweeps and pruned retrains (predicted and observed) as derived runs; prediction quality;
a real snakemake run."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from snakemake_stats import job_stats

from flowprobe.config import load_config
from flowprobe.disk import disk_table, startup_report
from flowprobe.errors import ConfigError
from flowprobe.models import build_model, probe_points
from flowprobe.prune import model_cost, observed_architecture
from flowprobe.sweep import expand_resolutions, is_observed_prune, prediction_quality, sweep_borders

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
NARROW_VGG = {"model": "VGG16", "model_options": {"widths": [2, 2, 2, 2, 2]}}


def config_with(**runs) -> dict:
    return {"runs": runs, "defaults": {"dataset": "cifar10-mini"}}


def test_a_swept_run_becomes_one_run_per_resolution():
    config = config_with(vgg={**NARROW_VGG, "resolutions": [32, 64]}, other=NARROW_VGG)
    config["figures"] = {"f": {"kind": "resolution_sweep", "runs": ["vgg"]}, "g": {"kind": "layer_probes", "runs": ["other", "vgg"]}}
    loaded = load_config(config)
    assert list(loaded["runs"]) == ["vgg_r32", "vgg_r64", "other"]
    assert [loaded["runs"][n]["resolution"] for n in ("vgg_r32", "vgg_r64")] == [32, 64]
    assert loaded["runs"]["vgg_r64"]["sweep"] == {"base": "vgg", "resolution": 64}
    assert "resolutions" not in loaded["runs"]["vgg_r64"] and "sweep" not in loaded["runs"]["other"]
    assert loaded["figures"]["f"]["runs"] == ["vgg_r32", "vgg_r64"]
    assert loaded["figures"]["g"]["runs"] == ["other", "vgg_r32", "vgg_r64"]


def test_pruned_sibling_follows_each_resolution_and_only_prune_figures_draw_it():
    config = config_with(vgg={**NARROW_VGG, "resolutions": [32, 64, 200], "prune": {"from": "predicted"}})
    config["figures"] = {"p": {"kind": "prune", "runs": ["vgg"]}, "s": {"kind": "resolution_sweep", "runs": ["vgg"]}}
    loaded = load_config(config)
    assert loaded["runs"]["vgg_r32_pruned"]["model_options"]["keep_convs"] == 6
    assert loaded["runs"]["vgg_r64_pruned"]["model_options"]["keep_convs"] == 9
    assert "vgg_r200_pruned" not in loaded["runs"]  # no tail at 200 px: nothing to prune
    assert loaded["runs"]["vgg_r32_pruned"]["pruned"]["run"] == "vgg_r32"
    assert loaded["figures"]["p"]["runs"] == ["vgg_r32", "vgg_r32_pruned", "vgg_r64", "vgg_r64_pruned", "vgg_r200"]
    assert loaded["figures"]["s"]["runs"] == ["vgg_r32", "vgg_r64", "vgg_r200"]


def test_sweep_and_prune_config_errors():
    with pytest.raises(ConfigError, match="clashes"):
        load_config(config_with(vgg={**NARROW_VGG, "resolutions": [32]}, vgg_r32=NARROW_VGG))
    with pytest.raises(ConfigError, match="repeats"):
        expand_resolutions({"vgg": {**NARROW_VGG, "resolutions": [32, 32]}}, {})
    for source in ("predicted", "observed"):  # at parse time, before the full run has trained
        with pytest.raises(ConfigError, match="runs.d.prune: prune: DenseNet18 cannot be pruned yet"):
            load_config(config_with(d={"model": "DenseNet18", "prune": {"from": source}}))
        with pytest.raises(ConfigError, match="AlainMLP cannot be pruned yet"):
            load_config(config_with(m={"model": "AlainMLP", "dataset": "mnist", "prune": {"from": source}}))
    with pytest.raises(ConfigError, match="resolution = 16 is too small"):
        load_config(config_with(vgg={**NARROW_VGG, "resolutions": [32, 16]}))


def test_an_observed_prune_is_always_a_sibling_bounded_by_the_full_model():
    config = config_with(vgg={**NARROW_VGG, "resolutions": [32, 200], "prune": {"from": "observed"}, "seeds": [0, 1]},
                         ck={**NARROW_VGG, "checkpoint": "weights.pt", "prune": {"from": "observed"}})
    config["figures"] = {"p": {"kind": "prune", "runs": ["vgg", "ck"]}}
    loaded = load_config(config)
    # at 200 px the rules predict no tail, but the probes decide: the sibling exists at every resolution
    for name in ("vgg_r32", "vgg_r200"):
        child = loaded["runs"][f"{name}_pruned"]
        assert child["pruned"] == {"run": name, "from": "observed"}  # removed: known once the probes exist
        assert (child["model"], child["model_options"]) == (NARROW_VGG["model"], NARROW_VGG["model_options"])
        assert child["seeds"] == [0, 1] and is_observed_prune(child) and not is_observed_prune(loaded["runs"][name])
    assert "checkpoint" not in loaded["runs"]["ck_pruned"]  # the full run is imported, its sibling trained
    assert loaded["figures"]["p"]["runs"] == ["vgg_r32", "vgg_r32_pruned", "vgg_r200", "vgg_r200_pruned", "ck",
                                             "ck_pruned"]
    disk = disk_table(loaded).set_index("run")
    assert disk.loc["vgg_r32_pruned", "upper_bound"] and not disk.loc["vgg_r32", "upper_bound"]
    assert disk.loc["vgg_r32_pruned", "gib"] == disk.loc["vgg_r32", "gib"]  # the full model: an upper bound
    assert "vgg_r32_pruned ≤" in startup_report(loaded)
    predicted = load_config(config_with(ck={**NARROW_VGG, "checkpoint": "weights.pt", "prune": {"from": "predicted"}}))
    assert predicted["runs"]["ck"]["checkpoint"] == "weights.pt" and "checkpoint" not in predicted["runs"]["ck_pruned"]


def test_prediction_quality_counts_by_hand():
    verdicts = pd.DataFrame({
        "run": ["a", "a", "a", "b", "b", "b"],
        "verdict": ["tail"] * 5 + ["role"],
        "level": ["layer"] * 5 + ["pathway"],
        "predicted": [True, True, False, True, False, "dominant"],
        "observed": [True, False, False, "undecided", False, "non-dominant"],
    })
    quality = prediction_quality(verdicts, {"a": 32, "b": 64}).set_index(["verdict", "resolution", "predicted", "observed"])
    assert quality.loc[("tail", "32", "True", "False"), "outcome"] == "disagree"
    assert quality.loc[("tail", "64", "True", "undecided"), "outcome"] == "undecided"
    assert quality.loc[("tail", "all", "False", "False"), "count"] == 2
    assert quality.loc[("tail", "32", "True", "True"), "share"] == pytest.approx(1 / 3)
    assert quality.loc[("role", "all", "dominant", "non-dominant"), "count"] == 1
    assert quality.xs("all", level="resolution")["count"].sum() == len(verdicts)


def test_sweep_borders_by_hand():
    acc = [0.3, 0.5, 0.6, 0.6, 0.59, 0.61]  # rises until p2, flat after (p5 gains 0.01 > tol 0.005)
    names = [f"p{i}" for i in range(6)]
    table = pd.DataFrame({
        "run": "v_r32", "model": "M", "resolution": 32, "seed": 0, "probe_point": names, "stage": 0, "block": 0,
        "pathway": "trunk", "position": range(6), "kind": ["conv"] * 5 + ["linear"],
        "input_receptive_field": [1, 3, 5, 40, 60, 80], "border_layer": [False, False, False, True, False, False],
        "test_acc": acc,
    })
    row = sweep_borders(table).iloc[0]
    assert (row["border_layer"], row["border_index"]) == ("p3", 3)
    assert (row["last_productive"], row["last_productive_index"]) == ("p5", 5)
    flat = sweep_borders(table.assign(test_acc=acc[:5] + [0.6])).iloc[0]
    assert flat["last_productive"] == "p2"


# ---- a real snakemake run on tests/configs/sweep.yaml --------------------------------------------------

def snakemake(workdir: Path, *args: str, config: str = "sweep.yaml") -> subprocess.CompletedProcess:
    cmd = [str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--cores", "2", *args,
           "--configfile", str(workdir / config)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("sweep")
    shutil.copy(ROOT / "tests" / "configs" / "sweep.yaml", path / "sweep.yaml")
    snakemake(path)
    return path


@pytest.mark.workflow
def test_every_resolution_and_pruned_run_is_trained_and_probed(workdir):
    runs = workdir / "results" / "runs"
    assert sorted(p.name for p in runs.iterdir()) == sorted(
        ["vgg_r32", "vgg_r64", "vgg_r32_pruned", "vgg_r64_pruned", "mp", "mp_pruned", "obs", "obs_pruned"])
    probes = pd.read_csv(runs / "vgg_r32_pruned" / "seed0" / "probes.csv")
    assert probes["probe_point"].tolist() == [f"conv{i}" for i in range(1, 7)] + ["fc1"]
    mp = pd.read_csv(runs / "mp_pruned" / "seed0" / "probes.csv")
    assert set(mp["pathway"]) == {"trunk", "p0"}  # the 5x5 pathway is gone; a lone pathway is p0
    assert (mp["pathway"] == "p0").sum() == 4 and (mp["receptive_field"].diff().dropna() > 0).all()
    sweep = pd.read_csv(workdir / "results" / "tables" / "sweep.csv")
    assert sorted(sweep["resolution"].unique()) == [32, 64]
    borders = sweep[sweep["border_layer"]].groupby("resolution")["probe_point"].first()
    assert borders.to_dict() == {32: "conv7", 64: "conv10"}


@pytest.mark.workflow
def test_prune_table_and_figures(workdir):
    table = pd.read_csv(workdir / "results" / "tables" / "prune.csv").set_index("run")
    assert set(table.index) == {"vgg_r32", "vgg_r64", "vgg_r32_pruned", "vgg_r64_pruned", "mp", "mp_pruned", "obs",
                                "obs_pruned"}  # the prune figure draws both of each pair
    for full in ("vgg_r32", "vgg_r64", "mp"):
        pruned = table.loc[f"{full}_pruned"]
        assert pruned["variant"] == "pruned" and pruned["full_run"] == full
        assert pruned["params"] < table.loc[full, "params"] and pruned["flops"] < table.loc[full, "flops"]
    assert table.loc["vgg_r32", "params"] == table.loc["vgg_r64", "params"]  # same weights, 4x the pixels
    assert table.loc["vgg_r64", "flops"] > 3.9 * table.loc["vgg_r32", "flops"]
    assert (table["seconds_per_epoch"] > 0).all() and table["train_acc"].between(0, 1).all()
    assert table.loc["vgg_r32_pruned", "removed"].split() == [f"conv{i}" for i in range(7, 14)]
    for fig in ("sweep", "prune"):
        assert (workdir / "results" / "figures" / f"{fig}.pdf").read_bytes()[:5] == b"%PDF-"


@pytest.mark.workflow
def test_an_observed_prune_trains_the_cut_its_full_runs_probes_give(workdir):
    full = load_config(yaml.safe_load((workdir / "sweep.yaml").read_text()))["runs"]["obs"]
    runs = workdir / "results" / "runs"
    files = [f"results/runs/obs/seed{seed}/probes.csv" for seed in full["seeds"]]
    probes = pd.concat([pd.read_csv(workdir / f) for f in files])
    # computed here from the files, independently of the workflow's pruned_spec job
    arch = observed_architecture(probes, full["model"], full["model_options"], full["resolution"]) or {
        "model": full["model"], "model_options": full["model_options"], "removed": []}  # nothing cut: full again
    spec = json.loads((runs / "obs_pruned" / "pruned_spec.json").read_text())
    assert [p["file"] for p in spec["probes"]] == files and spec["pruned"] == bool(arch["removed"])
    for seed in full["seeds"]:
        record = torch.load(runs / "obs_pruned" / f"seed{seed}" / "model.pt", map_location="cpu", weights_only=False)
        assert (record["run"]["model"], record["run"]["model_options"]) == (arch["model"], arch["model_options"])
        assert record["run"]["pruned"] == {"run": "obs", "from": "observed", "removed": arch["removed"]}
    # everything after training reads the trained model: the dump, the probes, the cost, the tables
    cut = build_model(arch["model"], 10, input_size=full["resolution"], **arch["model_options"])
    pruned_probes = pd.read_csv(runs / "obs_pruned" / "seed0" / "probes.csv")
    assert pruned_probes["probe_point"].tolist() == [p.name for p in probe_points(cut)]
    row = pd.read_csv(workdir / "results" / "tables" / "prune.csv", keep_default_na=False).set_index("run").loc["obs_pruned"]
    assert (row["variant"], row["full_run"], row["model"]) == ("pruned", "obs", arch["model"])
    assert row["removed"].split() == arch["removed"]
    assert row["params"] == model_cost(arch["model"], arch["model_options"], full["resolution"])["params"]
    verdicts = pd.read_csv(workdir / "results" / "tables" / "verdicts.csv")
    assert set(verdicts.loc[verdicts["run"] == "obs_pruned", "probe_point"].dropna()) <= set(pruned_probes["probe_point"])


@pytest.mark.workflow
def test_new_probes_of_the_full_run_rerun_the_cut_and_the_pruned_training(workdir):
    config = yaml.safe_load((workdir / "sweep.yaml").read_text())
    config["probes"]["l2_grid"] = [1.0e-2]
    (workdir / "probe.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    jobs = job_stats((lambda p: p.stdout + p.stderr)(snakemake(workdir, "-n", config="probe.yaml")))
    assert jobs.get("pruned_spec") == 1 and jobs.get("train") == 1  # obs_pruned's: no other run retrains
    config["probes"]["l2_grid"] = [1.0e-1]
    config["runs"]["obs"]["seeds"] = [0, 1]
    (workdir / "seeds.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = snakemake(workdir, "-n", config="seeds.yaml")
    assert job_stats(proc.stdout + proc.stderr).get("train") == 3  # obs seed 1, obs_pruned seeds 0 and 1
    job = (proc.stdout + proc.stderr).split("rule pruned_spec:")[1]
    inputs = job.split("input:")[1].split("\n")[0].strip()
    assert inputs.split(", ") == [f"results/runs/obs/seed{seed}/probes.csv" for seed in (0, 1)]


@pytest.mark.workflow
def test_prediction_quality_counts_every_verdict(workdir):
    verdicts = pd.read_csv(workdir / "results" / "tables" / "verdicts.csv")
    quality = pd.read_csv(workdir / "results" / "tables" / "prediction_quality.csv", dtype={"resolution": str})
    every = quality[quality["resolution"] == "all"]
    assert every.groupby("verdict")["count"].sum().to_dict() == verdicts.groupby("verdict").size().to_dict()
    at64 = quality[quality["resolution"] == "64"]["count"].sum()
    assert at64 == verdicts["run"].isin(["vgg_r64", "vgg_r64_pruned"]).sum()


@pytest.mark.workflow
def test_a_new_resolution_trains_only_its_own_runs(workdir):
    config = yaml.safe_load((workdir / "sweep.yaml").read_text())
    config["runs"]["vgg"]["resolutions"] = [32, 64, 96]
    (workdir / "more.yaml").write_text(yaml.safe_dump(config, sort_keys=False))  # params compare dicts in order
    jobs = job_stats((lambda p: p.stdout + p.stderr)(snakemake(workdir, "-n", config="more.yaml")))
    assert jobs.get("train") == 2 and jobs.get("activations") == 2  # vgg_r96 and vgg_r96_pruned
