"""What "Go with the Flow" (Richter et al.) reports, figure by figure: the one place for the paper's values.

Each `Claim` is keyed by the model spec and the paper's dataset; `claims_for(run)` finds the claims
a run of the config can be compared with (numbers need the paper's dataset family; qualitative
claims about the architecture apply on any dataset), and `scale(run, claim)` says how the run's
setting differs from the paper's, so a gap measured on the demo is not read as a failure.
Tolerances are stated per claim; docs/verdicts.md explains each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The study's schedule (phd-lab configs): 30 epochs; every figure is a single run.
PAPER_EPOCHS = 30
ACCURACY_TOL = 0.02  # 2 points: a single run of the paper against our seeds
DROP_TOL = 0.02  # 2 points around the 2.16-point ablation drop
CKA_TOL = 0.05  # below the paper's lowest diagonal CKA (0.84)
# model_options that shrink a model relative to the paper's (widths, growth, MLP size)
SIZE_OPTIONS = ("widths", "fc_width", "growth_rate", "init_features", "width", "span", "depth")
# datasets whose images are the paper's dataset (cifar10-mini: a class-balanced subset of CIFAR-10)
DATASET_FAMILY = {"cifar10": "cifar10", "cifar10-mini": "cifar10", "mnist": "mnist", "imagenette": "imagenette"}
NUMERIC = ("test_accuracy", "ablation_drop", "cka_diagonal")


@dataclass(frozen=True)
class Claim:
    """One value or claim the paper reports for a model on a dataset.

    quantity: test_accuracy | border_layer | tail_after_border | skipped | roles | ablation_drop |
    cka_diagonal; value: the paper's number, probe point, expected verdict or {pathway: role};
    select: which probe points a `skipped` claim is about (last_stage_new | tail_branch_outputs | branch).
    """

    figure: str
    model: str
    dataset: str
    resolution: int
    quantity: str
    value: object
    tolerance: float | None
    claim: str
    select: str = ""


DOMINANT_SHALLOW = {"min": "dominant", "max": "non-dominant"}
DOMINANT_WIDE = {"min": "non-dominant", "max": "dominant"}
COEXIST = {"min": "coexisting", "max": "coexisting"}

CLAIMS = [
    Claim("Fig. 1", "VGG16", "cifar10", 32, "test_accuracy", 0.9134, ACCURACY_TOL, "VGG16 on CIFAR-10: 91.34 % test accuracy"),
    Claim("Fig. 1", "VGG16", "cifar10", 32, "border_layer", "conv7", None,
          "the border layer of VGG16 at 32 px is conv7 (its input receptive field reaches 32 px)"),
    Claim("Fig. 1", "VGG16", "cifar10", 32, "tail_after_border", "yes", None,
          "layers after the border layer do not improve probe accuracy (the tail)"),
    Claim("Fig. 2", "AlainMLP", "mnist", 28, "skipped", "yes", None,
          "probe accuracy decays inside the skipped span and recovers at the add", select="branch"),
    Claim("Fig. 3", "DenseNet18", "cifar10", 32, "test_accuracy", 0.8344, ACCURACY_TOL, "DenseNet18 on CIFAR-10: 83.44 %"),
    Claim("Fig. 3", "DenseNet18", "cifar10", 32, "skipped", "yes", None,
          "DenseNet18 skips its last dense block: the new features' probe accuracy decays", select="last_stage_new"),
    Claim("Fig. 3", "ResNet34", "cifar10", 32, "skipped", "yes", None,
          "ResNet34 zig-zags in the tail: accuracy drops in the residual branch, recovers at the add",
          select="tail_branch_outputs"),
    Claim("Fig. 5a", "MPNet2(1:3x3, 4:7x7)", "cifar10", 32, "test_accuracy", 0.8829, ACCURACY_TOL, "88.29 %"),
    Claim("Fig. 5a", "MPNet2(1:3x3, 4:7x7)", "cifar10", 32, "roles", DOMINANT_SHALLOW, None,
          "1 vs 4 layers: the shallow 3x3 pathway dominates"),
    Claim("Fig. 5a", "MPNet2(1:3x3, 4:7x7)", "cifar10", 32, "ablation_drop", 0.0216, DROP_TOL,
          "removing the non-dominant pathway costs 2.16 points on average"),
    Claim("Fig. 5b", "MPNet4(1:3x3, 4:7x7)", "cifar10", 32, "roles", DOMINANT_SHALLOW, None,
          "1 vs 4 layers, two blocks per stage: the 3x3 pathway dominates"),
    Claim("Fig. 5b", "MPNet4(1:3x3, 4:7x7)", "cifar10", 32, "ablation_drop", 0.0216, DROP_TOL,
          "removing the non-dominant pathway costs 2.16 points on average"),
    Claim("Fig. 6a", "MPNet2(8:3x3, 1:11x11d2)", "imagenette", 160, "roles", DOMINANT_WIDE, None,
          "8 vs 1 layers: the single 21x21 layer (the study's 11x11 dilated 2) dominates; depth, not kernel "
          "size, decides"),
    Claim("Fig. 8c", "MPNet4(8:3x3, 1:7x7)", "imagenette", 200, "test_accuracy", 0.7404, ACCURACY_TOL,
          "ImageNette200: 74.04 %"),
    Claim("Fig. 8c", "MPNet4(8:3x3, 1:7x7)", "imagenette", 200, "roles", DOMINANT_WIDE, None,
          "8 vs 1 layers: the single 7x7 layer dominates"),
    Claim("Fig. 7 / 8a", "MPNet2(1:3x3, 2:7x7)", "cifar10", 32, "test_accuracy", 0.8269, ACCURACY_TOL, "82.69 %"),
    Claim("Fig. 7 / 8a", "MPNet2(1:3x3, 2:7x7)", "cifar10", 32, "roles", COEXIST, None, "1 vs 2 layers: coexisting"),
    Claim("Fig. 7 / 8b", "MPNet2(2:3x3, 2:7x7)", "cifar10", 32, "test_accuracy", 0.8373, ACCURACY_TOL, "83.73 %"),
    Claim("Fig. 7 / 8b", "MPNet2(2:3x3, 2:7x7)", "cifar10", 32, "roles", COEXIST, None, "2 vs 2 layers: coexisting"),
    Claim("Fig. 9", "MPNet2(8:3x3, 8:3x3)", "imagenette", 160, "roles", {"p0": "coexisting", "p1": "coexisting"}, None,
          "identical pathways coexist"),
    Claim("Fig. 9", "MPNet2(8:3x3, 8:3x3)", "imagenette", 160, "cka_diagonal", (0.84, 0.99), CKA_TOL,
          "identical pathways learn near-identical features: CKA diagonal 0.84-0.99 in the last block"),
]


def spec_key(spec: str) -> str:
    """A model spec without spaces, lower case: 'MPNet2(1:3x3, 4:7x7)' -> 'mpnet2(1:3x3,4:7x7)'."""
    return re.sub(r"\s+", "", spec).lower()


def claims_for(run: dict) -> list[Claim]:
    """The claims a run (a config `runs` entry with defaults filled in) can be compared with; a
    pruned retrain (`pruned` record) is not the paper's model and has none."""
    if run.get("pruned"):
        return []
    family = DATASET_FAMILY.get(run["dataset"])
    return [
        c for c in CLAIMS
        if spec_key(c.model) == spec_key(run["model"]) and (c.quantity not in NUMERIC or c.dataset == family)
    ]


def scale(run: dict, claim: Claim) -> str:
    """'paper' when the run is the paper's setting for `claim`, else what differs, '; '-separated."""
    diffs = []
    if run["dataset"] != claim.dataset:
        diffs.append(f"dataset {run['dataset']} (paper {claim.dataset})")
    if run["resolution"] != claim.resolution:
        diffs.append(f"resolution {run['resolution']} (paper {claim.resolution})")
    if run.get("max_per_class"):
        diffs.append(f"{run['max_per_class']} training images per class")
    if run.get("max_images"):
        diffs.append(f"{run['max_images']} training images")
    shrunk = {k: v for k, v in (run.get("model_options") or {}).items() if k in SIZE_OPTIONS}
    if shrunk:
        diffs.append("model " + ", ".join(f"{k}={v}" for k, v in shrunk.items()))
    epochs = run.get("train", {}).get("epochs", PAPER_EPOCHS)
    if epochs != PAPER_EPOCHS:
        diffs.append(f"{epochs} epochs (paper {PAPER_EPOCHS})")
    return "; ".join(diffs) or "paper"


def files_needed(claims: list[Claim]) -> list[str]:
    """Per-run files the comparison reads for `claims` (besides verdicts.csv)."""
    need = {"train_log.csv"}
    need |= {"ablation.csv" for c in claims if c.quantity == "ablation_drop"}
    need |= {"cka_pathways.csv" for c in claims if c.quantity == "cka_diagonal"}
    return sorted(need)
