"""Workflow configuration: defaults, schema validation and the checks a schema cannot express.

`load_config(raw)` returns the config with every default filled in, or raises `ConfigError`
with one line naming the key, the bad value and what is allowed. It runs in the Snakefile
before any job is scheduled.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import yaml

from flowprobe.errors import ConfigError, FlowprobeError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

# The study's settings (phd-lab): batch 64, plain SGD lr 0.1, ×0.1 every 10 epochs, 30 epochs.
DEFAULTS: dict = {
    "data_root": "data",
    "download": False,
    "device": "auto",
    "defaults": {
        "model_options": {},
        "dataset": "cifar10",
        "dataset_variant": None,
        "dataset_root": None,
        "resolution": 32,
        "channels": None,
        "max_per_class": None,
        "seeds": [0],
        "train": {
            "epochs": 30,
            "batch_size": 64,
            "lr": 0.1,
            "momentum": 0.0,
            "weight_decay": 0.0,
            "lr_step": 10,
            "lr_gamma": 0.1,
            "on_divergence": "stop",
        },  # optimizer (sgd) and augment (true) default in flowprobe.train.TrainSettings
    },
    "activations": {"reduction": "avgpool4", "batch_size": 256, "max_per_class": None},
    "probes": {"backend": "torch", "l2_grid": [1e-4, 1e-3, 1e-2, 1e-1], "val_fraction": 0.1, "max_iter": 200},
    "saturation": {"delta": 0.99, "k_rule": "textbook", "split": "train"},
    "cka": {"split": "test", "debiased": False, "pathways": None, "batch_size": 256},
    "gradients": {"batch_size": 64, "max_batches": 50},
    "ablation": {"finetune_epochs": 0, "finetune_lr": 0.01},
    "verdicts": {"layer_tol": 0.005, "pathway_tol": 0.01},
    "figures": {},
}


def deep_merge(base: dict, override: dict) -> dict:
    """`override` on top of `base`, recursing into dicts (lists are replaced)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _schema_error(err: jsonschema.ValidationError) -> ConfigError:
    where = _where(err.absolute_path)
    if err.validator == "additionalProperties" and isinstance(err.schema.get("properties"), dict):
        allowed = ", ".join(sorted(err.schema["properties"]))
        extra = sorted(set(err.instance) - set(err.schema["properties"]))
        return ConfigError(f"config: unknown key '{'.'.join([where, *extra]) if err.absolute_path else ', '.join(extra)}'; allowed here: {allowed}")
    if err.validator == "enum":
        allowed = ", ".join(str(v) for v in err.validator_value)
        return ConfigError(f"config: {where} = {err.instance!r} is not allowed; allowed: {allowed}")
    return ConfigError(f"config: {where} = {err.instance!r}: {err.message}")


def load_config(raw: dict) -> dict:
    """Validate `raw` (as read from YAML) and return it with defaults filled in."""
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(raw or {}), key=lambda e: len(list(e.absolute_path)))
    if errors:
        raise _schema_error(jsonschema.exceptions.best_match(errors) if len(errors) > 1 else errors[0])
    config = deep_merge(DEFAULTS, raw)
    config["runs"] = {name: _run_with_defaults(config["defaults"], run) for name, run in raw["runs"].items()}
    _expand_derived_runs(config)
    for name, run in config["runs"].items():
        _check_run(name, run)
    for name, fig in config["figures"].items():
        unknown = [r for r in fig["runs"] if r not in config["runs"]]
        if unknown:
            raise ConfigError(
                f"config: figures.{name}.runs names undefined run(s) {', '.join(unknown)}; "
                f"defined runs: {', '.join(config['runs'])}"
            )
    return config


def _run_with_defaults(defaults: dict, run: dict) -> dict:
    """A run on top of the defaults; its model_options replace the default ones whole, since
    options of one model family (e.g. MPNet widths) mean nothing to another."""
    merged = deep_merge(defaults, run)
    if "model_options" in run:
        merged["model_options"] = copy.deepcopy(run["model_options"])
    return merged


def _check_run(name: str, run: dict) -> None:
    from flowprobe.models import check_spec

    if "model" not in run:
        raise ConfigError(f"config: runs.{name}.model is missing; give a spec such as 'VGG16' or 'MPNet2(1:3x3, 4:7x7)'")
    try:
        check_spec(run["model"])
    except FlowprobeError as err:
        raise ConfigError(f"config: runs.{name}.model: {err}") from None
    # Build on the meta device (no memory): first at a generous size to check spec and options,
    # then at the run's resolution, so a failure there is the resolution's fault.
    channels = run["channels"] or (1 if run["dataset"] == "mnist" else 3)
    size = run["resolution"]
    try:
        _meta_forward(run, channels, max(size, 256))
    except FlowprobeError as err:
        raise ConfigError(f"config: runs.{name}: {err}") from None
    except TypeError as err:
        raise ConfigError(f"config: runs.{name}.model_options: {err}") from None
    try:
        _meta_forward(run, channels, size)
    except (FlowprobeError, RuntimeError):
        raise ConfigError(
            f"config: runs.{name}.resolution = {size} is too small for {run['model']}: its downsampling "
            "leaves no pixels; raise the resolution (32 works for every model of the study)"
        ) from None


def _meta_forward(run: dict, channels: int, size: int) -> None:
    import torch

    from flowprobe.models import build_model

    with torch.device("meta"):
        model = build_model(run["model"], 10, in_channels=channels, input_size=size, **run["model_options"])
        model(torch.zeros(2, channels, size, size))


def _expand_derived_runs(config: dict) -> None:
    """Resolution sweeps, then pruned retrains, become ordinary runs (see flowprobe.sweep)."""
    from flowprobe.sweep import expand_pruned, expand_resolutions

    config["runs"], config["figures"] = expand_resolutions(config["runs"], config["figures"])
    config["runs"], config["figures"] = expand_pruned(config["runs"], config["figures"])
