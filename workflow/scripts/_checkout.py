"""Put this checkout's library (src/) first on sys.path, so every job runs the code the
workflow was parsed with, in any environment (venv, conda, a Slurm node).

Snakemake appends the folder of a rule's script to sys.path, so `import _checkout` at the top
of a script finds this file; an installed flowprobe elsewhere then cannot shadow the checkout.
"""
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")
if sys.path[:1] != [SRC]:
    sys.path.insert(0, SRC)
