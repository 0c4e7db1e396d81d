"""Pruned architectures: what the border-layer rule removes, parameter counts by formula, FLOPs."""

import json

import pytest
import torch

from flowprobe.errors import ConfigError, FlowprobeError, ModelSpecError
from flowprobe.models import build_model, probe_points
from flowprobe.prune import (
    model_cost,
    observed_architecture,
    observed_pruned_spec,
    predicted_pathway_roles,
    pruned_architecture,
)
from flowprobe.workflow import run_from_pruned_spec

CLASSES = 10


def conv_bn(c_in: int, c_out: int, k: int, bias: bool) -> int:
    """Conv k×k (+ bias) followed by BN (weight and bias)."""
    return k * k * c_in * c_out + (c_out if bias else 0) + 2 * c_out


def vgg16_params(widths, keep: int, fc: int) -> int:
    """VGG16-BN: 3x3 convs with bias, then BN1d -> Linear(c, fc) -> BN1d -> Linear(fc, classes)."""
    per_conv = [w for n, w in zip((2, 2, 3, 3, 3), widths) for _ in range(n)][:keep]
    total, c_in = 0, 3
    for width in per_conv:
        total, c_in = total + conv_bn(c_in, width, 3, True), width
    return total + 2 * c_in + c_in * fc + fc + 2 * fc + fc * CLASSES + CLASSES


def resnet_params(widths, blocks) -> int:
    """CIFAR stem, BasicBlocks (two 3x3 conv+BN, 1x1 conv+BN shortcut when the shape changes), linear head."""
    total, c_in = conv_bn(3, widths[0], 3, False), widths[0]
    for s, (n, width) in enumerate(zip(blocks, widths)):
        for b in range(n):
            total += conv_bn(c_in, width, 3, False) + conv_bn(width, width, 3, False)
            if (s > 0 and b == 0) or c_in != width:
                total += conv_bn(c_in, width, 1, False)
            c_in = width
    return total + c_in * CLASSES + CLASSES


def mpnet_params(widths, k_blocks, pathways) -> int:
    """Stem 3x3 conv+BN; per block each pathway n × (k×k conv + BN); additive merge; linear head."""
    total, c_in = conv_bn(3, widths[0], 3, False), widths[0]
    for width in widths:
        for _ in range(k_blocks):
            for depth, kernel in pathways:
                total += sum(conv_bn(c_in if j == 0 else width, width, kernel, False) for j in range(depth))
            c_in = width
    return total + c_in * CLASSES + CLASSES


def n_params(spec, **options):
    return sum(p.numel() for p in build_model(spec, CLASSES, **options).parameters())


def test_vgg16_at_32_px_keeps_conv1_to_conv6():
    widths = [4, 6, 8, 10, 12]
    arch = pruned_architecture("VGG16", {"widths": widths, "fc_width": 16}, 32)
    assert arch["model_options"]["keep_convs"] == 6
    assert arch["removed"] == [f"conv{i}" for i in range(7, 14)]
    model = build_model("VGG16", CLASSES, **arch["model_options"])
    assert [p.name for p in probe_points(model)] == [f"conv{i}" for i in range(1, 7)] + ["fc1"]
    assert n_params("VGG16", **arch["model_options"]) == vgg16_params(widths, 6, 16)
    assert n_params("VGG16", widths=widths, fc_width=16) == vgg16_params(widths, 13, 16)


def test_vgg16_at_64_px_keeps_nine_and_at_200_px_nothing_is_pruned():
    assert pruned_architecture("VGG16", {}, 64)["model_options"]["keep_convs"] == 9
    assert pruned_architecture("VGG16", {}, 200) is None


def test_resnet18_drops_its_last_blocks():
    widths = [4, 6, 8, 10]
    arch = pruned_architecture("ResNet18", {"widths": widths}, 32)
    blocks = arch["model_options"]["blocks"]
    assert blocks == [2, 2, 1, 0]
    assert n_params("ResNet18", **arch["model_options"]) == resnet_params(widths, blocks)
    assert n_params("ResNet18", widths=widths) == resnet_params(widths, [2, 2, 2, 2])
    assert all(name.startswith(("s2.b1", "s3.")) for name in arch["removed"])


def test_mpnet_loses_its_non_dominant_pathway():
    widths = [4, 6, 8, 10]
    arch = pruned_architecture("MPNet2(1:3x3, 4:7x7)", {"widths": widths}, 32)
    assert arch["model"] == "MPNet2(1:3x3)" and arch["removed"] == ["max"]
    assert n_params(arch["model"], widths=widths) == mpnet_params(widths, 2, [(1, 3)])
    assert n_params("MPNet2(1:3x3, 4:7x7)", widths=widths) == mpnet_params(widths, 2, [(1, 3), (4, 7)])
    assert pruned_architecture("MPNet2(2:3x3, 2:7x7)", {}, 32) is None  # similar depths coexist


def test_observed_verdicts_override_the_prediction():
    assert pruned_architecture("VGG16", {}, 32, last_productive="conv9")["model_options"]["keep_convs"] == 9
    assert pruned_architecture("ResNet18", {}, 32, last_productive="s1.b1.add")["model_options"]["blocks"] == [2, 2, 0, 0]
    kept = pruned_architecture("MPNet1(4:3x3, 1:7x7)", {}, 32, roles={"min": "non-dominant", "max": "dominant"})
    assert kept["model"] == "MPNet1(1:7x7)"


def test_depth_rule():
    assert predicted_pathway_roles([1, 4]) == ["dominant", "non-dominant"]
    assert predicted_pathway_roles([2, 3]) == ["coexisting", "coexisting"]


def test_flops_by_formula():
    # conv1 of VGG16 at 32 px: 2 FLOPs per MAC, 3*3*3 MACs per output, 4 x 32 x 32 outputs, etc.
    widths, res = [4, 4, 4, 4, 4], 32
    cost = model_cost("VGG16", {"widths": widths, "fc_width": 8, "keep_convs": 2}, res)
    expected = 2 * (9 * 3 * 4 * res * res + 9 * 4 * 4 * res * res + 4 * 8 + 8 * CLASSES)
    assert cost["flops"] == expected
    assert cost["params"] == vgg16_params(widths, 2, 8)
    full = model_cost("VGG16", {"widths": widths, "fc_width": 8}, 64)
    assert full["flops"] > 4 * model_cost("VGG16", {"widths": widths, "fc_width": 8}, 32)["flops"] * 0.99


def test_pruning_errors_are_clear():
    with pytest.raises(ConfigError, match="DenseNet18 cannot be pruned"):
        pruned_architecture("DenseNet18", {}, 32)
    with pytest.raises(ModelSpecError, match="keep_convs"):
        build_model("VGG16", CLASSES, keep_convs=14)
    with pytest.raises(ModelSpecError, match="blocks"):
        build_model("ResNet18", CLASSES, blocks=[0, 0, 0, 0])


def test_pruned_models_run_forward():
    for spec, options in (("VGG16", {"keep_convs": 6}), ("ResNet18", {"blocks": [2, 2, 1, 0]})):
        model = build_model(spec, CLASSES, widths=[2] * (5 if spec == "VGG16" else 4), **options).eval()
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, CLASSES)


def test_observed_architecture_from_probe_tables():
    import pandas as pd

    from flowprobe.models import receptive_fields

    model = build_model("VGG16", CLASSES, widths=[2] * 5)
    points = receptive_fields(model, 32)
    acc = [0.2, 0.3, 0.35, 0.4, 0.45, 0.46, 0.47, 0.5, 0.5, 0.49, 0.48, 0.47, 0.46, 0.45]  # peaks at conv8
    seeds = [points.assign(seed=s, test_acc=[a + 0.001 * s for a in acc]) for s in (0, 1)]
    arch = observed_architecture(pd.concat(seeds), "VGG16", {"widths": [2] * 5}, 32)
    assert arch["model_options"]["keep_convs"] == 8 and arch["removed"][0] == "conv9"


# ---- prune: {from: observed}: the spec the pruned_spec rule writes and the train job reads --------

NARROW = {"widths": [2] * 5, "fc_width": 8}
FULL = {"run": "v", "model": "VGG16", "model_options": NARROW, "resolution": 32, "in_channels": 3}
TOLS = {"layer_tol": 0.01, "pathway_tol": 0.03, "depth_ratio": 2.0}


def _probe_files(tmp_path, accs_per_seed):
    """probes.csv of a narrow VGG16 at 32 px, one file per seed with the given accuracies."""
    import pandas as pd

    from flowprobe.models import receptive_fields

    points = receptive_fields(build_model("VGG16", CLASSES, **NARROW), 32)
    files = []
    for seed, accs in enumerate(accs_per_seed):
        path = tmp_path / f"seed{seed}.csv"
        points.assign(test_acc=accs).to_csv(path, index=False)
        files.append(str(path))
    return files


def test_observed_spec_is_cut_at_the_seed_mean_last_productive_layer(tmp_path):
    import hashlib

    import pandas as pd

    # seed 0 alone would keep conv9 (0.52 beats 0.5 by 0.02); the mean over both seeds peaks at conv8
    seed0 = [0.2, 0.3, 0.35, 0.4, 0.45, 0.46, 0.47, 0.5, 0.52, 0.49, 0.48, 0.47, 0.46, 0.45]
    seed1 = [0.2, 0.3, 0.35, 0.4, 0.45, 0.46, 0.47, 0.5, 0.48, 0.49, 0.48, 0.47, 0.46, 0.45]
    files = _probe_files(tmp_path, [seed0, seed1])
    spec = observed_pruned_spec(files, FULL, TOLS)
    assert spec["model_options"] == {**NARROW, "keep_convs": 8} and spec["evidence"] == {"last_productive": "conv8"}
    assert spec["removed"] == [f"conv{i}" for i in range(9, 14)] and spec["pruned"] and spec["from"] == "observed"
    assert (spec["full_model"], spec["full_model_options"], spec["run"]) == ("VGG16", NARROW, "v")
    assert spec["probes"][1] == {"file": files[1], "sha256": hashlib.sha256(open(files[1], "rb").read()).hexdigest()}
    both = pd.concat([pd.read_csv(f) for f in files])
    arch = observed_architecture(both, "VGG16", NARROW, 32)
    assert (arch["model"], arch["model_options"], arch["removed"]) == (spec["model"], spec["model_options"], spec["removed"])
    assert observed_pruned_spec(files[:1], FULL, TOLS)["model_options"]["keep_convs"] == 9
    assert json.loads(json.dumps(spec)) == spec  # what the rule writes is the whole record


def test_nothing_observed_unproductive_trains_the_full_model_again(tmp_path):
    rising = [0.1 + 0.05 * i for i in range(14)]  # every point beats the ones before it
    spec = observed_pruned_spec(_probe_files(tmp_path, [rising]), FULL, TOLS)
    assert (spec["model"], spec["model_options"], spec["removed"], spec["pruned"]) == ("VGG16", NARROW, [], False)
    assert "trains the full architecture again" in spec["note"]
    path = tmp_path / "pruned_spec.json"
    path.write_text(json.dumps(spec))
    run = {"model": "VGG16", "model_options": NARROW, "resolution": 32, "dataset": "cifar10-mini"}
    trained, line = run_from_pruned_spec(run, path)
    assert trained == {**run, "pruned": {"run": "v", "from": "observed", "removed": []}}
    assert "trains the full architecture again" in line


def test_the_train_job_takes_the_spec_and_refuses_a_stale_one(tmp_path):
    files = _probe_files(tmp_path, [[0.3, 0.4] + [0.4] * 12])  # nothing gained after conv2
    path = tmp_path / "pruned_spec.json"
    path.write_text(json.dumps(observed_pruned_spec(files, FULL, TOLS)))
    run = {"model": "VGG16", "model_options": NARROW, "resolution": 32}
    trained, line = run_from_pruned_spec(run, path)
    assert trained["model_options"] == {**NARROW, "keep_convs": 2} and trained["pruned"]["removed"][0] == "conv3"
    assert "training VGG16" in line and run["model_options"] == NARROW  # the params are not changed
    with pytest.raises(FlowprobeError, match="derived from"):
        run_from_pruned_spec({**run, "resolution": 64}, path)


def test_a_checkpoint_of_the_full_spec_is_not_resumed_by_the_pruned_one(tmp_path, caplog):
    """The training identity holds the spec and options the job built, so a checkpoint of the full
    model (or of another observed cut) is moved aside, not resumed."""
    import logging

    from flowprobe.data import load_dataset
    from flowprobe.train import TrainSettings, train_model

    data = load_dataset("cifar10-mini", max_per_class=2)
    settings = TrainSettings(epochs=1, batch_size=10, lr=0.01)
    for options in (NARROW, {**NARROW, "keep_convs": 2}):
        model = build_model("VGG16", CLASSES, **options)
        with caplog.at_level(logging.INFO, logger="flowprobe.train"):
            train_model(model, data, settings, seed=0, log_path=tmp_path / "log.csv", checkpoint_path=tmp_path / "c.pt",
                        device="cpu", progress=False, model_spec={"spec": "VGG16", "options": options})
    assert "model.options.keep_convs: '<unset>' → 2" in caplog.text and (tmp_path / "c.stale.pt").exists()
