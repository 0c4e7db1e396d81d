"""Write the rules' conda environments from requirements.lock.

envs/flowprobe.yaml pins the whole lock (every rule that runs torch). envs/tables.yaml pins only
what the table and figure rules import (pandas, matplotlib, seaborn, the config's YAML and
schema) and what those need, read from the installed packages' metadata, with the lock's
versions. One source of truth for pins: the lock. tests/test_envs.py fails when an env and the
lock disagree; rerun `python scripts/sync_envs.py` after changing the lock.
"""
from importlib.metadata import PackageNotFoundError, requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
HEADER = """\
# Conda environment of {what} (`snakemake --software-deployment-method conda`).
# Generated from requirements.lock by scripts/sync_envs.py: do not edit by hand.
# Every script imports the flowprobe library from the checkout (workflow/scripts/_checkout.py).
name: {name}
channels:
  - conda-forge
  - nodefaults
dependencies:
  - python=3.11
  - pip
  - pip:
"""
# The packages the table/figure rules import (flowprobe.figures, tables, plots, verdicts,
# comparison, sweep, config, logs); tests/test_envs.py checks those modules need nothing else.
TABLE_ROOTS = ("pandas", "numpy", "matplotlib", "seaborn", "PyYAML", "jsonschema", "tqdm")


def pins(lock: Path) -> list[str]:
    lines = (line.strip() for line in lock.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def closure(roots, locked: dict[str, str]) -> list[str]:
    """The locked pins of `roots` and, recursively, of what they require (extras left out)."""
    seen, todo = set(), [canonicalize_name(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen or name not in locked:
            continue
        seen.add(name)
        try:
            needs = requires(name) or []
        except PackageNotFoundError:
            needs = []
        for line in needs:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return [locked[name] for name in sorted(seen)]


def write_env(path: Path, what: str, name: str, lines: list[str]) -> None:
    body = "".join(f"      - {pin}\n" for pin in lines)
    path.write_text(HEADER.format(what=what, name=name) + body)


def main() -> None:
    lock = pins(ROOT / "requirements.lock")
    locked = {canonicalize_name(Requirement(p).name): p for p in lock}
    write_env(ROOT / "envs" / "flowprobe.yaml", "every rule that runs torch", "flowprobe", lock)
    write_env(ROOT / "envs" / "tables.yaml", "the table and figure rules (no torch)", "flowprobe-tables",
              closure(TABLE_ROOTS, locked))


if __name__ == "__main__":
    main()
