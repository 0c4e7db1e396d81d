"""`snakemake --profile slurm` on a real single-node Slurm started by scripts/slurm_local.sh.

Every job goes through sbatch, the GPU stages ask Slurm for a GPU and the CPU stages do not,
and every CSV equals the one a local run of the same config writes. The test cluster has no
accounting database, so a throw-away profile stacked on profiles/slurm switches the plugin to
squeue status checks and short polling (docs/cluster.md explains a real site's profile).
The profile checks at the top need no Slurm and run everywhere.
"""
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake.profiles import ProfileConfigFileParser
from snakemake_stats import job_stats, rule_resources

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
SLURM_LOCAL = ROOT / "scripts" / "slurm_local.sh"
# One run and one figure per analysis kind: every rule runs once, in half the jobs of tiny.yaml
# (each Slurm job costs two Snakemake start-ups, ~10 s on two cores).
FIGURES = ("figsat", "figgrad", "figcka", "figheat", "figabl")
TEST_CLUSTER_PROFILE = {
    "slurm-status-command": "squeue",  # no sacct without an accounting database
    "slurm-no-account": True,
    # The plugin polls after this many seconds, then 10 s longer after each poll that finds no
    # job finished: 5 catches the typical 10-20 s test job at the first or second poll.
    "slurm-init-seconds-before-status-checks": 5,
    "slurm-keep-successful-logs": True,
}


def parse_profile(path: Path) -> dict:
    with path.open() as stream:
        return dict(ProfileConfigFileParser().parse(stream))


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> dict[str, dict[str, str]]:
    """Resources per rule of a dry run of the Slurm test's config: the GPU stages are read from
    the workflow (GPU_JOB in workflow/rules/common.smk), never listed again here."""
    workdir = tmp_path_factory.mktemp("planned")
    (workdir / "config.yaml").write_text(yaml.safe_dump(slurm_test_config()))
    proc = subprocess.run(snakemake_cmd(workdir, "-n", *targets(True)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return rule_resources(proc.stdout + proc.stderr)


def gpu_rules(planned: dict) -> set[str]:
    return {rule for rule, res in planned.items() if res.get("gpu") == "1"}


def test_the_rules_not_the_profiles_say_which_stages_hold_a_gpu(planned):
    for profile in ("profiles/slurm", "profiles/local"):
        assert "set-resources" not in parse_profile(ROOT / profile / "config.yaml"), profile
    gpu = gpu_rules(planned)
    assert {"train", "activations", "probes", "gradients", "ablation"} <= gpu  # they run a network
    assert not {"saturation", "table", "figure"} & gpu  # numpy / pandas / matplotlib only


def test_slurm_profile_takes_partition_and_account_from_the_environment(monkeypatch):
    monkeypatch.delenv("FLOWPROBE_SLURM_PARTITION", raising=False)
    monkeypatch.delenv("FLOWPROBE_SLURM_ACCOUNT", raising=False)
    neutral = parse_profile(ROOT / "profiles/slurm/config.yaml")
    assert neutral["executor"] == "slurm"
    assert not any(d.startswith(("slurm_partition", "slurm_account")) for d in neutral["default-resources"])
    monkeypatch.setenv("FLOWPROBE_SLURM_PARTITION", "gpu-a100")
    monkeypatch.setenv("FLOWPROBE_SLURM_ACCOUNT", "proj42")
    site = parse_profile(ROOT / "profiles/slurm/config.yaml")["default-resources"]
    assert "slurm_partition='gpu-a100'" in site and "slurm_account='proj42'" in site


@pytest.mark.parametrize(("visible", "expected"), [("0,1", ["gpu=2"]), ("3", ["gpu=1"]), ("", None)])
def test_local_profile_allows_one_job_per_visible_gpu(monkeypatch, visible, expected):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert parse_profile(ROOT / "profiles/local/config.yaml").get("resources") == expected


def test_profile_name_resolves_from_the_repo_root(tmp_path):
    """`snakemake --profile slurm` as users type it: ./slurm → profiles/slurm (dry run)."""
    (tmp_path / "tiny.yaml").write_text((ROOT / "tests/configs/tiny.yaml").read_text())
    env = {**os.environ, "FLOWPROBE_SLURM_PARTITION": "gpu"}
    proc = subprocess.run(
        [str(SNAKEMAKE), "--profile", "slurm", "-d", str(tmp_path), "--configfile", str(tmp_path / "tiny.yaml"),
         "-n", "results/runs/mp/seed0/model.pt"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    resources = [l for l in (proc.stdout + proc.stderr).splitlines() if l.strip().startswith("resources:")]
    assert len(resources) == 1 and "gpu=1" in resources[0] and "slurm_partition=gpu" in resources[0]


# ---------------------------------------------------------------- real Slurm, end to end


@pytest.fixture(scope="module")
def cluster():
    """A running single-node Slurm; stopped afterwards only if this fixture started it.

    Skips when Slurm can be neither installed nor started (e.g. not root); CI sets
    FLOWPROBE_REQUIRE_SLURM=1 to turn that skip into a failure.
    """
    if subprocess.run([str(SLURM_LOCAL), "status"], capture_output=True).returncode == 0:
        yield
        return
    proc = subprocess.run([str(SLURM_LOCAL), "start"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        reason = f"no local Slurm: {(proc.stderr.strip().splitlines() or [f'exit {proc.returncode}'])[-1]}"
        if os.environ.get("FLOWPROBE_REQUIRE_SLURM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield
    finally:
        subprocess.run([str(SLURM_LOCAL), "stop"], capture_output=True, timeout=60)


def slurm_test_config() -> dict:
    """tiny.yaml reduced to its MPNet run and one figure per analysis kind."""
    config = yaml.safe_load((ROOT / "tests/configs/tiny.yaml").read_text())
    config["runs"] = {"mp": config["runs"]["mp"]}
    config["figures"] = {name: {**config["figures"][name], "runs": ["mp"]} for name in FIGURES}
    return config


def targets(with_figure: bool) -> list[str]:
    tables = [f"results/tables/{name}.csv" for name in FIGURES]
    return tables + (["results/figures/figsat.pdf"] if with_figure else [])


def snakemake_cmd(workdir: Path, *args: str) -> list[str]:
    return [str(SNAKEMAKE), "-s", str(ROOT / "Snakefile"), "-d", str(workdir),
            "--configfile", str(workdir / "config.yaml"), *args]


def failure(what: str, log: Path, workdir: Path) -> str:
    slurm_logs = sorted((workdir / ".snakemake" / "slurm_logs").rglob("*.log"))
    tails = "".join(f"\n--- {p}\n{p.read_text()[-1500:]}" for p in slurm_logs[-3:])
    return f"{what} failed:\n{log.read_text()[-4000:]}{tails}"


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    """(slurm workdir, its snakemake log, local workdir): both runs of the same config.

    The local reference runs alongside the Slurm run, niced: the Slurm run mostly waits on job
    start-ups and status polls, and the local run soaks up the idle cores meanwhile.
    """
    base = tmp_path_factory.mktemp("slurm")
    config = yaml.safe_dump(slurm_test_config())
    dirs = {name: base / name for name in ("slurm", "local", "test-cluster")}
    for path in dirs.values():
        path.mkdir()
    for name in ("slurm", "local"):
        (dirs[name] / "config.yaml").write_text(config)
    (dirs["test-cluster"] / "config.yaml").write_text(yaml.safe_dump(TEST_CLUSTER_PROFILE))
    local_log, slurm_log = base / "local.log", base / "slurm.log"
    start = time.perf_counter()
    with local_log.open("w") as out:
        local = subprocess.Popen(snakemake_cmd(dirs["local"], "--cores", "2", *targets(False)),
                                 stdout=out, stderr=subprocess.STDOUT, preexec_fn=lambda: os.nice(10))
    try:
        with slurm_log.open("w") as out:
            # `--profile slurm` resolves ./slurm, as users type it from the repository root.
            slurm = subprocess.run(
                snakemake_cmd(dirs["slurm"], "--profile", "slurm", "--profile", str(dirs["test-cluster"]),
                              *targets(True)),
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=900,
            )
        local_rc = local.wait(timeout=900)
    finally:
        if local.poll() is None:  # the Slurm run timed out: do not leave the local one behind
            local.kill()
    print(f"slurm + local runs: {time.perf_counter() - start:.0f} s")
    assert slurm.returncode == 0, failure("snakemake --profile slurm", slurm_log, dirs["slurm"])
    assert local_rc == 0, failure("local snakemake", local_log, dirs["local"])
    return dirs["slurm"], slurm_log.read_text(), dirs["local"]


def slurm_jobs(log: str) -> dict[str, dict[str, str]]:
    """scontrol's record of every job this run submitted (finished jobs stay for MinJobAge)."""
    ids = re.findall(r"submitted with SLURM jobid (\d+)", log)
    records = {}
    for job_id in ids:
        line = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True).stdout
        records[job_id] = dict(re.findall(r"(\S+?)=(\S*)", line))
    return records


@pytest.mark.slurm
def test_every_job_was_submitted_with_sbatch_and_completed(runs, planned):
    _, log, _ = runs
    stats = job_stats(log)
    assert set(stats) == set(planned) - {"all"}
    jobs = slurm_jobs(log)
    assert len(jobs) == sum(stats.values()) == len(re.findall(r"Finished jobid", log))
    rules = [re.match(r"rule_(.+?)(_wildcards_|$)", job["Comment"]).group(1) for job in jobs.values()]
    assert {r: rules.count(r) for r in set(rules)} == stats
    assert all(job["JobState"] == "COMPLETED" for job in jobs.values())


@pytest.mark.slurm
def test_gpu_stages_asked_slurm_for_a_gpu_and_cpu_stages_did_not(runs, planned):
    _, log, _ = runs
    gpu = gpu_rules(planned)
    for job in slurm_jobs(log).values():
        rule = re.match(r"rule_(.+?)(_wildcards_|$)", job["Comment"]).group(1)
        asked = job.get("TresPerJob", "")
        assert asked == ("gres:gpu:1" if rule in gpu else ""), (rule, asked)


@pytest.mark.slurm
def test_outputs_equal_a_local_run(runs):
    """Training on CPU with a fixed seed is deterministic: every CSV must match the local one."""
    slurm_dir, _, local_dir = runs
    names = sorted(p.relative_to(local_dir) for p in (local_dir / "results").rglob("*.csv"))
    assert names == sorted(p.relative_to(slurm_dir) for p in (slurm_dir / "results").rglob("*.csv"))
    run_csvs = {"train_log", "probes", "saturation", "cka_output", "cka_pathways", "gradients", "ablation"}
    assert {f"results/runs/mp/seed0/{n}.csv" for n in run_csvs} | {f"results/tables/{f}.csv" for f in FIGURES} <= set(map(str, names))
    for name in names:
        local, slurm = pd.read_csv(local_dir / name), pd.read_csv(slurm_dir / name)
        if name.name == "train_log.csv":  # wall-clock seconds differ by design
            local, slurm = local.drop(columns="seconds"), slurm.drop(columns="seconds")
        pd.testing.assert_frame_equal(slurm, local, check_exact=True, obj=str(name))
    assert (slurm_dir / "results/figures/figsat.pdf").read_bytes()[:5] == b"%PDF-"
