"""One source of truth for versions: requirements.lock.

envs/flowprobe.yaml (the rules' conda environment, written by scripts/sync_envs.py) must pin
exactly the lock, envs/tables.yaml (the table and figure rules) a part of it, and
pyproject.toml's ranges must admit every locked version.
"""
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
SYNC = "run `python scripts/sync_envs.py` after changing requirements.lock"


def pins(lines: list[str], where: str) -> dict[str, str]:
    """{canonical name: version} of `name==version` lines; anything else is an error."""
    out = {}
    for line in lines:
        req = Requirement(line)
        (spec,) = req.specifier  # exactly one `==` pin per package
        assert spec.operator == "==", f"{where}: '{line}' is not an exact `==` pin"
        name = canonicalize_name(req.name)
        assert name not in out, f"{where}: {req.name} is pinned twice"
        out[name] = spec.version
    return out


def lock_pins(name: str = "requirements.lock") -> dict[str, str]:
    lines = [l.strip() for l in (ROOT / name).read_text().splitlines()]
    return pins([l for l in lines if l and not l.startswith("#")], name)


def conda_env() -> dict:
    return yaml.safe_load((ROOT / "envs" / "flowprobe.yaml").read_text())


def env_pip_lines(env: dict) -> list[str]:
    pip = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip) == 1, "envs/flowprobe.yaml needs exactly one `pip:` list of dependencies"
    return pip[0]


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_conda_env_pins_exactly_the_lock():
    lock, env = lock_pins(), pins(env_pip_lines(conda_env()), "envs/flowprobe.yaml")
    missing = sorted(f"{n}=={v}" for n, v in lock.items() if n not in env)
    extra = sorted(f"{n}=={v}" for n, v in env.items() if n not in lock)
    differ = sorted(f"{n}: lock {lock[n]}, env {env[n]}" for n in lock.keys() & env.keys() if lock[n] != env[n])
    assert not (missing or extra or differ), (
        f"envs/flowprobe.yaml disagrees with requirements.lock ({SYNC}):\n"
        f"  missing from env: {missing}\n  only in env: {extra}\n  different: {differ}"
    )


def test_conda_env_python_is_one_pyproject_allows():
    conda_python = [d for d in conda_env()["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert len(conda_python) == 1, f"envs/flowprobe.yaml should pin python once ({SYNC})"
    version = conda_python[0].split("=", 1)[1].lstrip("=")
    assert Version(version) in SpecifierSet(project()["requires-python"]), (
        f"envs/flowprobe.yaml pins python {version}, outside pyproject's requires-python "
        f"{project()['requires-python']}"
    )


def declared_requirements() -> list[tuple[str, Requirement]]:
    """(group, requirement) of pyproject's dependencies and every optional group."""
    proj = project()
    groups = {"dependencies": proj["dependencies"], **proj.get("optional-dependencies", {})}
    return [(group, Requirement(line)) for group, lines in groups.items() for line in lines]


@pytest.mark.parametrize(("group", "req"), declared_requirements(), ids=lambda x: str(x))
def test_pyproject_range_admits_the_locked_version(group, req):
    # the tools of `make test` (lint, test extras) may be pinned in either lock
    lock = lock_pins() | lock_pins("requirements-dev.lock") if group in ("lint", "test") else lock_pins()
    name = canonicalize_name(req.name)
    assert name in lock, f"pyproject [{group}] needs {req}, which requirements.lock does not pin; add it to the lock"
    assert req.specifier.contains(lock[name], prereleases=True), (
        f"pyproject [{group}] asks for {req}, but requirements.lock pins {req.name}=={lock[name]}: "
        "widen the range or update the lock"
    )



# ------------------------------------------------- the small environment of the table/figure rules

BLOCKED = ("torch", "torchvision", "sklearn", "h5py", "scipy")  # in envs/flowprobe.yaml only
IMPORT_WITHOUT = """
import importlib, sys
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError(f"{{name}} is not in envs/tables.yaml")
sys.meta_path.insert(0, Blocker())
sys.path.insert(0, {src!r})
for module in {modules!r}:
    importlib.import_module(module)
"""


def rules_in_env(env: str) -> dict[str, Path]:
    """{rule: its script} of every rule whose conda directive names `env` (ENV, ENV_TABLES)."""
    out = {}
    for path in (ROOT / "workflow" / "rules").glob("*.smk"):
        for name, body in re.findall(r"^rule (\w+):(.*?)(?=^rule |\Z)", path.read_text(), re.S | re.M):
            if re.search(rf"conda:\s+{env}\s", body):
                out[name] = ROOT / "workflow" / "scripts" / re.search(r'script:\s+"\.\./scripts/(\S+)"', body).group(1)
    return out


def test_table_env_pins_a_part_of_the_lock():
    lock = lock_pins()
    env = pins(env_pip_lines(yaml.safe_load((ROOT / "envs" / "tables.yaml").read_text())), "envs/tables.yaml")
    assert {"pandas", "matplotlib", "seaborn", "pyyaml", "jsonschema"} <= set(env)
    assert not set(BLOCKED) & set(env)
    differ = sorted(f"{n}: lock {lock.get(n)}, env {v}" for n, v in env.items() if lock.get(n) != v)
    assert not differ, f"envs/tables.yaml disagrees with requirements.lock ({SYNC}): {differ}"


def test_rules_of_the_table_env_import_nothing_it_lacks():
    rules = rules_in_env("ENV_TABLES")
    assert {"table", "figure", "verdicts"} <= set(rules)
    modules = sorted({m for script in rules.values() for m in re.findall(r"^from (flowprobe[\w.]*) import", script.read_text(), re.M)})
    code = IMPORT_WITHOUT.format(blocked=BLOCKED, src=str(ROOT / "src"), modules=modules)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"a rule of envs/tables.yaml needs more than that env: {proc.stderr[-1500:]}"
