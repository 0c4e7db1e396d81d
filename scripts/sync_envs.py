"""Write envs/flowprobe.yaml (the rules' conda environment) from requirements.lock.

One source of truth for pins: the lock. tests/test_envs.py fails when the two disagree;
rerun `python scripts/sync_envs.py` after changing the lock.
"""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = """\
# Conda environment of every rule (`snakemake --software-deployment-method conda`).
# Generated from requirements.lock by scripts/sync_envs.py: do not edit by hand.
# Every script imports the flowprobe library from the checkout (workflow/scripts/_checkout.py).
name: flowprobe
channels:
  - conda-forge
  - nodefaults
dependencies:
  - python=3.11
  - pip
  - pip:
"""


def pins(lock: Path) -> list[str]:
    lines = (line.strip() for line in lock.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def main() -> None:
    body = "".join(f"      - {pin}\n" for pin in pins(ROOT / "requirements.lock"))
    (ROOT / "envs" / "flowprobe.yaml").write_text(HEADER + body)


if __name__ == "__main__":
    main()
