"""End to end: real `snakemake` on a tiny config, every output checked; selective reruns; bad config."""
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import PIL.Image
import pandas as pd
import pytest
import yaml
from snakemake_stats import job_stats

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
RUN = "results/runs/{run}/seed0"
pytestmark = pytest.mark.workflow


def snakemake(workdir: Path, *args: str, config: str = "tiny.yaml", check: bool = True) -> subprocess.CompletedProcess:
    cmd = [str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "-d", str(workdir), "--cores", "2",
           "--configfile", str(workdir / config), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def scheduled(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Job counts of a dry run."""
    return job_stats(proc.stdout + proc.stderr)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    path = tmp_path_factory.mktemp("flow")
    shutil.copy(ROOT / "tests" / "configs" / "tiny.yaml", path / "tiny.yaml")
    start = time.perf_counter()
    snakemake(path)
    print(f"tiny workflow: {time.perf_counter() - start:.0f} s")
    return path


def test_training_outputs(workdir):
    for run in ("mp", "mlp"):
        log = pd.read_csv(workdir / RUN.format(run=run) / "train_log.csv")
        assert list(log["epoch"]) == [1]
        assert log["test_acc"].between(0, 1).all()
        assert not (workdir / RUN.format(run=run) / "checkpoint.pt").exists()
        assert (workdir / f"results/logs/train/{run}_seed0.log").read_text().count("epoch 1/1") >= 1
        assert (workdir / f"results/benchmarks/train/{run}_seed0.tsv").exists()


def test_activations_file(workdir):
    with h5py.File(workdir / RUN.format(run="mp") / "activations.h5") as h5:
        assert h5["labels/train"].shape == (120,) and h5["labels/test"].shape == (120,)
        assert h5["output/test"].shape == (120, 10)
        names = h5.attrs["probe_points"]
        assert "stem" in names and bool(h5.attrs["complete"]) and h5.attrs["seed"] == 0
        assert 0 <= h5.attrs["test_accuracy"] <= 1
        assert h5["layers/stem"].attrs["pathway"] == "trunk"


def _table(workdir, name):
    return pd.read_csv(workdir / "results" / "tables" / f"{name}.csv")


def test_analysis_tables(workdir):
    probes = pd.read_csv(workdir / RUN.format(run="mp") / "probes.csv")
    assert probes["test_acc"].between(0, 1).all() and probes["train_acc"].between(0, 1).all()
    assert {"min", "max", "trunk"} <= set(probes["pathway"])
    assert probes["converged"].isin([True, False]).all()
    sat = pd.read_csv(workdir / RUN.format(run="mp") / "saturation.csv")
    assert sat["saturation"].between(0, 1, inclusive="right").all()
    assert (sat["intrinsic_dim"] <= sat["n_features"]).all()
    cka = pd.read_csv(workdir / RUN.format(run="mlp") / "cka_output.csv")
    assert cka["cka"].between(0, 1).all() and len(cka) == len(pd.read_csv(workdir / RUN.format(run="mlp") / "probes.csv"))
    grads = pd.read_csv(workdir / RUN.format(run="mp") / "gradients.csv")
    assert (grads["mean_abs_grad"] > 0).all()
    heat = pd.read_csv(workdir / RUN.format(run="mp") / "cka_pathways.csv")
    assert heat["cka"].between(-1e-6, 1 + 1e-6).all() and len(heat) == 1 * 2  # 1 min layer × 2 max layers
    abl = pd.read_csv(workdir / RUN.format(run="mp") / "ablation.csv")
    assert abl["accuracy"].between(0, 1).all()


def test_torch_and_sklearn_probes_agree_on_real_activations(workdir):
    from flowprobe.analysis.probes import probe_table

    h5 = workdir / RUN.format(run="mp") / "activations.h5"
    knobs = dict(l2_grid=[1e-2, 1e-1], max_iter=500, progress=False)
    ours, ref = probe_table(h5, backend="torch", **knobs), probe_table(h5, backend="sklearn", **knobs)
    diff = (ours["test_acc"] - ref["test_acc"]).abs()
    assert ours["converged"].all() and ref["converged"].all()
    assert diff.mean() <= 0.01, diff.describe()
    assert (ours["l2"] == ref["l2"]).mean() >= 0.9


def test_figure_tables_and_pdfs(workdir):
    n_points = len(pd.read_csv(workdir / RUN.format(run="mp") / "probes.csv"))
    fig7 = _table(workdir, "fig7")
    assert len(fig7) == n_points  # one row per run × seed × probe point
    assert {"run", "seed", "model", "test_accuracy", "probe_point", "test_acc"} <= set(fig7.columns)
    assert fig7["model"].unique().tolist() == ["MPNet1(1:3x3, 2:5x5)"]
    assert set(_table(workdir, "figcka")["run"]) == {"mp", "mlp"}
    assert {"saturation", "test_acc"} <= set(_table(workdir, "figsat").columns)
    for fig in ("fig7", "figmlp", "figsat", "figgrad", "figcka", "figheat", "figabl"):
        pdf = workdir / "results" / "figures" / f"{fig}.pdf"
        assert pdf.read_bytes()[:5] == b"%PDF-", fig
        # the PNG is a drawn figure: 200 dpi, several inches wide, and not a blank page
        png = np.asarray(PIL.Image.open(workdir / "results" / "figures" / f"{fig}.png").convert("L"), dtype=float)
        assert png.shape[1] >= 800 and png.shape[0] >= 500, (fig, png.shape)
        assert (png < 128).mean() > 0.005 and png.std() > 10, fig  # lines, text and markers, not white


def test_summary_and_verdict_tables(workdir):
    summary = _table(workdir, "fig7_summary")
    assert {"test_acc_mean", "test_acc_std", "n_seeds", "test_accuracy_mean"} <= set(summary.columns)
    assert (summary["n_seeds"] == 1).all() and len(summary) == len(_table(workdir, "fig7"))
    verdicts = _table(workdir, "verdicts")
    assert set(verdicts["run"]) == {"mp", "mlp"}
    assert set(verdicts["verdict"]) == {"tail", "skipped", "role"}
    roles = verdicts[verdicts["verdict"] == "role"]
    assert set(roles["pathway"]) == {"min", "max"} and set(roles["run"]) == {"mp"}
    assert roles["observed"].isin(["dominant", "non-dominant", "coexisting", "undecided"]).all()
    comparison = _table(workdir, "paper_comparison")  # the tiny runs match only Fig. 2's MLP claim
    assert comparison.loc[comparison["run"] == "mlp", "figure"].tolist() == ["Fig. 2"]
    assert (comparison["agree"] == "no run").sum() == len(comparison) - 1


def test_html_report_holds_every_figure_and_table(workdir):
    snakemake(workdir, "--report", str(workdir / "report.html"))
    html = (workdir / "report.html").read_text(errors="replace")
    for name in ("fig7.pdf", "figheat.pdf", "figabl.pdf", "verdicts.csv", "paper_comparison.csv", "fig7_summary.csv"):
        assert name in html, name
    assert "border layer" in html  # the figure caption


def test_nothing_to_do_after_a_complete_run(workdir):
    assert scheduled(snakemake(workdir, "-n")) == {}


def test_changing_a_probe_setting_reruns_probes_and_dependents_only(workdir):
    config = yaml.safe_load((workdir / "tiny.yaml").read_text())
    config["probes"]["l2_grid"] = [0.05]
    (workdir / "changed.yaml").write_text(yaml.safe_dump(config))
    jobs = scheduled(snakemake(workdir, "-n", config="changed.yaml"))
    assert jobs.get("probes") == 2
    assert "train" not in jobs and "activations" not in jobs and "saturation" not in jobs
    # fig7, figmlp, figsat, figgrad, figcka read probes; figheat and figabl do not.
    assert jobs.get("table") == 5 and jobs.get("figure") == 5 and jobs.get("verdicts") == 1
    assert jobs.get("paper_comparison") == 1


def test_changing_training_reruns_everything_of_that_run(workdir):
    config = yaml.safe_load((workdir / "tiny.yaml").read_text())
    config["runs"]["mlp"]["train"] = {"lr": 0.01}
    (workdir / "lr.yaml").write_text(yaml.safe_dump(config))
    jobs = scheduled(snakemake(workdir, "-n", config="lr.yaml"))
    assert jobs.get("train") == 1 and jobs.get("activations") == 1


def test_bad_config_fails_fast_with_one_line(workdir):
    config = yaml.safe_load((workdir / "tiny.yaml").read_text())
    config["runs"]["mp"]["model"] = "MPNet1(0:3x3)"
    (workdir / "bad.yaml").write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    proc = snakemake(workdir, "-n", config="bad.yaml", check=False)
    assert proc.returncode != 0 and time.perf_counter() - start < 30
    lines = [l for l in proc.stderr.splitlines() if l.startswith("flowprobe:")]
    assert len(lines) == 1 and "runs.mp.model" in lines[0]
    assert "Traceback" not in proc.stderr
