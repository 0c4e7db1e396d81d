"""Config validation: every bad value fails early with one line naming the key and the fix."""
import copy
from pathlib import Path

import pytest
import yaml

from flowprobe.config import DEFAULTS, deep_merge, load_config
from flowprobe.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def demo() -> dict:
    return yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())


@pytest.mark.parametrize("path", ["config.yaml", "config/demo.yaml"])
def test_shipped_configs_are_valid(path):
    config = load_config(yaml.safe_load((ROOT / path).read_text()))
    for run in config["runs"].values():
        assert run["train"]["epochs"] >= 1
        assert run["seeds"]


def test_defaults_fill_every_run_and_section():
    raw = {"runs": {"a": {"model": "VGG16", "train": {"epochs": 2}}}}
    config = load_config(raw)
    run = config["runs"]["a"]
    assert run["train"]["epochs"] == 2
    assert run["train"]["lr"] == DEFAULTS["defaults"]["train"]["lr"] == 0.1
    assert run["train"]["momentum"] == 0.0  # the study's plain SGD
    assert config["probes"]["backend"] == "torch"
    assert raw == {"runs": {"a": {"model": "VGG16", "train": {"epochs": 2}}}}, "input must not be mutated"


def test_deep_merge_recurses_and_replaces_lists():
    assert deep_merge({"a": {"b": 1, "c": [1]}}, {"a": {"c": [2]}}) == {"a": {"b": 1, "c": [2]}}


def _error(mutate) -> str:
    raw = demo()
    mutate(raw)
    with pytest.raises(ConfigError) as info:
        load_config(raw)
    message = str(info.value)
    assert "\n" not in message, "one line"
    return message


def test_unknown_top_level_key_lists_allowed_keys():
    message = _error(lambda c: c.update(probez={}))
    assert "probez" in message and "probes" in message and "allowed" in message


def test_unknown_nested_key_names_its_path():
    message = _error(lambda c: c["runs"]["mpnet2_2x3_2x7"].update(epochs=3))
    assert "runs.mpnet2_2x3_2x7.epochs" in message
    assert "train" in message  # the allowed keys include where epochs belongs


def test_wrong_type_and_negative_epochs():
    assert "runs.mpnet2_2x3_2x7.train.epochs" in _error(lambda c: c["runs"]["mpnet2_2x3_2x7"].update(train={"epochs": "ten"}))
    message = _error(lambda c: c["runs"]["mpnet2_2x3_2x7"].update(train={"epochs": -1}))
    assert "epochs" in message and "minimum" in message


def test_unknown_dataset_lists_the_allowed_ones():
    message = _error(lambda c: c["runs"]["mpnet2_2x3_2x7"].update(dataset="cifar100"))
    assert "cifar100" in message and "cifar10-mini" in message and "imagenette" in message


def test_unknown_model_spec_names_the_run_and_the_models():
    message = _error(lambda c: c["runs"]["mpnet2_2x3_2x7"].update(model="VGG17"))
    assert "runs.mpnet2_2x3_2x7.model" in message and "VGG17" in message and "VGG16" in message


def test_bad_mpnet_spec_shows_the_grammar():
    message = _error(lambda c: c["runs"]["mpnet2_2x3_2x7"].update(model="MPNet2(0:3x3)"))
    assert "MPNet{K}" in message


def test_unknown_model_option():
    message = _error(lambda c: c["runs"]["mpnet2_2x3_2x7"].update(model_options={"depth": 3}))
    assert "depth" in message and "widths" in message


def test_figure_naming_an_undefined_run():
    message = _error(lambda c: c["figures"]["fig7"]["runs"].append("nope"))
    assert "figures.fig7.runs" in message and "nope" in message and "mpnet2_2x3_2x7" in message


def test_unknown_figure_kind():
    message = _error(lambda c: c["figures"]["fig7"].update(kind="violin"))
    assert "violin" in message and "pathway_probes" in message


def test_resolution_too_small_for_the_downsampling():
    raw = {"runs": {"tiny": {"model": "VGG16", "resolution": 8}}}
    with pytest.raises(ConfigError) as info:
        load_config(raw)
    assert "runs.tiny.resolution = 8" in str(info.value) and "too small" in str(info.value)
    raw["runs"]["tiny"]["resolution"] = 32
    load_config(raw)


def test_bad_probe_backend_and_delta():
    assert "sklearn" in _error(lambda c: c["probes"].update(backend="saga"))
    assert "saturation.delta" in _error(lambda c: c["saturation"].update(delta=1.5))


def test_no_runs():
    raw = copy.deepcopy(demo())
    del raw["runs"]
    with pytest.raises(ConfigError, match="runs"):
        load_config(raw)


def test_run_model_options_replace_the_defaults_whole():
    raw = {
        "defaults": {"model_options": {"widths": [8, 16, 32, 64]}},
        "runs": {"mp": {"model": "MPNet1(1:3x3)"}, "dn": {"model": "DenseNet18", "model_options": {"growth_rate": 4}}},
    }
    runs = load_config(raw)["runs"]
    assert runs["mp"]["model_options"] == {"widths": [8, 16, 32, 64]}
    assert runs["dn"]["model_options"] == {"growth_rate": 4}


def test_figure_kind_enum_is_the_registry():
    from flowprobe.config import _schema
    from flowprobe.figures import KINDS

    assert _schema()["properties"]["figures"]["additionalProperties"]["properties"]["kind"]["enum"] == list(KINDS)
    message = _error(lambda c: c["figures"]["fig7"].update(kind="violin"))
    assert all(kind in message for kind in KINDS)


def test_smoke_keeps_models_and_shrinks_data_and_schedules():
    from flowprobe.config import SMOKE_BATCH, SMOKE_IMAGES

    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    full, smoke = load_config(raw), load_config({**raw, "smoke": True})
    assert full["smoke"] is False and smoke["smoke"] is True
    assert list(smoke["runs"]) == list(full["runs"]) and smoke["figures"] == full["figures"]
    for name, run in smoke["runs"].items():
        same = ("model", "model_options", "dataset", "dataset_variant", "resolution", "channels", "seeds")
        assert {k: run[k] for k in same} == {k: full["runs"][name][k] for k in same}
        assert run["max_images"] == SMOKE_IMAGES and run["train"]["epochs"] == 1
        assert run["train"]["batch_size"] == SMOKE_BATCH
        kept = {k: v for k, v in full["runs"][name]["train"].items() if k not in ("epochs", "lr", "batch_size")}
        assert kept.items() <= run["train"].items(), "optimizer, momentum, augmentation... as configured"
    assert smoke["activations"]["max_per_class"] is None  # the dump sees the run's images
    assert smoke["activations"]["reduction"] == full["activations"]["reduction"]
    assert smoke["gradients"]["max_batches"] == 1 and smoke["gradients"]["batch_size"] == SMOKE_BATCH
    assert len(smoke["probes"]["l2_grid"]) == 1
    assert smoke["activations"]["dtype"] == "float32" and smoke["ablation"]["max_images"] == SMOKE_BATCH
    assert full["ablation"]["max_images"] is None


def test_smoke_must_be_a_boolean():
    message = _error(lambda c: c.update(smoke="yes please"))
    assert "smoke" in message


def test_job_processes_skip_the_model_build():
    raw = {"runs": {"tiny": {"model": "VGG16", "resolution": 8}}}
    with pytest.raises(ConfigError):
        load_config(raw)
    # Jobs trust the parse that scheduled them: no model is built, the schema still applies.
    assert load_config(raw, check_models=False)["runs"]["tiny"]["resolution"] == 8
    with pytest.raises(ConfigError, match="resolution"):
        load_config({"runs": {"tiny": {"model": "VGG16", "resolution": 4}}}, check_models=False)


def test_command_line_spellings_of_booleans():
    raw = {"runs": {"a": {"model": "VGG16"}}, "smoke": "true", "download": "False"}
    config = load_config(raw)
    assert config["smoke"] is True and config["download"] is False
    assert "smoke" in _error(lambda c: c.update(smoke="maybe"))
