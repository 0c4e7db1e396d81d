"""Workflow configuration: defaults, schema validation and the checks a schema cannot express.

`load_config(raw)` returns the config with every default filled in, or raises `ConfigError`
with one line naming the key, the bad value and what is allowed. It runs in the Snakefile
before any job is scheduled.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import jsonschema
import yaml

from flowprobe.errors import ConfigError, FlowprobeError
from flowprobe.figures import KINDS

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"

# The study's settings (phd-lab): batch 64, plain SGD lr 0.1, ×0.1 every 10 epochs, 30 epochs.
DEFAULTS: dict = {
    "data_root": "data",
    "download": False,
    "smoke": False,
    "device": "auto",
    "defaults": {
        "model_options": {},
        "dataset": "cifar10",
        "dataset_variant": None,
        "dataset_root": None,
        "resolution": 32,
        "channels": None,
        "max_per_class": None,
        "max_images": None,
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
            "optimizer": "sgd",  # the study trained its long-skip MLP with adam
            "augment": True,  # random crop (4-px padding) + horizontal flip; off for digits
        },
    },
    "keep_activations": True,
    "activations": {"reduction": "avgpool4", "batch_size": 256, "max_per_class": None, "dtype": "float16",
                    "compression": None},
    # the one place of the probe defaults: flowprobe.analysis.probes reads its signatures from here
    "probes": {
        "backend": "torch",
        "l2_grid": [1e-4, 1e-3, 1e-2, 1e-1],
        "val_fraction": 0.1,
        "selection_rows": 10000,
        "max_iter": 200,
        "tol": 1e-4,
        "seed": 0,
        "n_bootstrap": 1000,
        "ci_level": 0.95,
    },
    "saturation": {"delta": 0.99, "k_rule": "textbook", "split": "train", "source": "prebn_nearest4"},
    "cka": {"split": "test", "debiased": False, "pathways": None, "batch_size": 256},
    "gradients": {"batch_size": 64, "max_batches": 50},
    "ablation": {"finetune_epochs": 0, "finetune_lr": 0.01, "max_images": None},
    "verdicts": {"layer_tol": 0.01, "pathway_tol": 0.03, "depth_ratio": 2.0},
    "figures": {},
}


# Smoke mode (`smoke: true`, e.g. `--config smoke=true`): every run, model, width, resolution,
# analysis and figure of the config, but each run trains one epoch on SMOKE_IMAGES images (of as
# many classes) and sees as many test images, and every analysis sees those, so the whole DAG runs
# on a CPU in minutes. It finds shape, dtype, wiring and memory-per-image errors at the real sizes;
# its numbers mean nothing. The overlay below is the only place that says what smoke mode changes:
# - lr is small because one step at lr 0.1 leaves the batch-norm running statistics so far from the
#   new weights that deep plain pathways (MPNet2(8:3x3, 8:3x3)) reach inf in eval mode; even at
#   1e-3 a one-epoch DenseNet18 reaches values beyond float16's range, so the dump stores float32
#   (the float16 path is exercised by the demo and the tests of flowprobe.activations).
# - Backward passes take SMOKE_BATCH images: MPNet4(8:3x3, 1:7x7) at 200 px keeps ~1.3 GB of
#   activations per image for the backward pass (benchmarks/model_sizes.py), so a batch of 20 was
#   killed for memory on a 23 GB machine. SMOKE_IMAGES is a multiple of it, so no batch norm sees a batch of one, and 4 so that
#   debiased CKA (n > 3) and probes (two classes or more) are defined.
# - The probe grid is one l2 (no held-out selection, which needs two images of a class).
# - A forward pass of MPNet4(8:3x3, 1:7x7) at 200 px takes ~2.6 s per image on one CPU core and
#   its ablation table needs 19 of them per image, so ablations see SMOKE_BATCH test images.
SMOKE_IMAGES = 4
SMOKE_BATCH = 2
SMOKE_RUN = {"max_images": SMOKE_IMAGES, "train": {"epochs": 1, "lr": 1e-3, "batch_size": SMOKE_BATCH}}
SMOKE_ANALYSES = {
    "activations": {"dtype": "float32"},
    "probes": {"l2_grid": [1e-2], "max_iter": 10},
    "gradients": {"batch_size": SMOKE_BATCH, "max_batches": 1},
    "ablation": {"max_images": SMOKE_BATCH},
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


@functools.lru_cache(maxsize=1)
def _schema() -> dict:
    """The config schema, its figure `kind` enum filled in from `flowprobe.figures.KINDS`."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    figure = schema["properties"]["figures"]["additionalProperties"]
    figure["properties"]["kind"]["enum"] = list(KINDS)
    return schema


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


def load_config(raw: dict, check_models: bool = True) -> dict:
    """Validate `raw` (as read from YAML) and return it with defaults filled in.

    Args:
        raw: the config as read from YAML (plus any `--config` overrides).
        check_models: build every run's model (meta device) to check spec, options and
            resolution. The workflow's main process does; the processes Snakemake starts per
            job (e.g. on Slurm) skip it, since the parse that scheduled them already checked.

    Returns:
        The config with every default filled in, each run complete under `runs`, and the smoke
        overlay applied when `smoke` is true.
    """
    raw = _command_line_booleans(raw or {})
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: len(list(e.absolute_path)))
    if errors:
        raise _schema_error(jsonschema.exceptions.best_match(errors) if len(errors) > 1 else errors[0])
    config = deep_merge(DEFAULTS, raw)
    config["runs"] = {name: _run_with_defaults(config["defaults"], run) for name, run in raw["runs"].items()}
    _expand_derived_runs(config)
    if config["smoke"]:
        config = _smoke(config)
    for name, run in config["runs"].items():
        _check_run(name, run, check_models)
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


def _command_line_booleans(raw: dict) -> dict:
    """`raw` with 'true'/'false' turned into booleans for the top-level boolean keys.

    Snakemake reads `--config smoke=true download=false` as strings (only True/False become
    booleans); YAML spells them in lower case, so both spellings must work on the command line.
    """
    flags = {key for key, spec in _schema()["properties"].items() if spec.get("type") == "boolean"}
    words = {"true": True, "false": False}
    return {key: words.get(value.lower(), value) if key in flags and isinstance(value, str) else value
            for key, value in raw.items()}


def _smoke(config: dict) -> dict:
    """The config with the smoke overlay (SMOKE_RUN, SMOKE_ANALYSES) on every run and analysis."""
    config = deep_merge(config, SMOKE_ANALYSES)
    config["runs"] = {name: deep_merge(run, SMOKE_RUN) for name, run in config["runs"].items()}
    return config


def _check_run(name: str, run: dict, check_models: bool) -> None:
    if "model" not in run:
        raise ConfigError(f"config: runs.{name}.model is missing; give a spec such as 'VGG16' or 'MPNet2(1:3x3, 4:7x7)'")
    if not check_models:
        return
    from flowprobe.models import check_spec

    try:
        check_spec(run["model"])
    except FlowprobeError as err:
        raise ConfigError(f"config: runs.{name}.model: {err}") from None
    channels = run["channels"] or (1 if run["dataset"] == "mnist" else 3)
    size = run["resolution"]
    options = json.dumps(run["model_options"], sort_keys=True)
    problem = _build_problem(run["model"], options, channels, size)
    if problem is None:
        return
    # It does not build at the run's resolution: if it builds at a generous one, the resolution is at fault.
    if size < 256 and _build_problem(run["model"], options, channels, 256) is None:
        raise ConfigError(
            f"config: runs.{name}.resolution = {size} is too small for {run['model']}: its downsampling "
            "leaves no pixels; raise the resolution (32 works for every model of the study)"
        )
    raise ConfigError(f"config: runs.{name}{problem}")


@functools.lru_cache(maxsize=None)
def _build_problem(spec: str, options: str, channels: int, size: int) -> str | None:
    """None if `spec` builds with `options` (JSON) for `channels` × `size`², else where and why not.

    The model is built once on the meta device (no memory, no forward pass): the builders trace
    every layer's spatial size (flowprobe.models.receptive.Trace) and raise when a window no
    longer fits or merged branches disagree, which is what a forward pass would find.
    """
    import torch

    from flowprobe.models import build_model

    try:
        with torch.device("meta"), skip_random_init():
            build_model(spec, 10, in_channels=channels, input_size=size, **json.loads(options))
    except FlowprobeError as err:
        return f": {err}"
    except TypeError as err:
        return f".model_options: {err}"
    return None


def skip_random_init():
    """A torch function mode under which in-place random init is a no-op (the class is defined
    here, not at module level, because torch is imported only when models are checked)."""
    import torch

    class SkipRandomInit(torch.overrides.TorchFunctionMode):
        # Random init fills no values on the meta device, and its first call there imports
        # torch._dynamo (about a second): skipping it keeps the check to the shapes.
        SKIP = {torch.Tensor.normal_, torch.Tensor.uniform_, torch.nn.init.normal_, torch.nn.init.uniform_,
                torch.nn.init.trunc_normal_, torch.nn.init.kaiming_normal_, torch.nn.init.kaiming_uniform_,
                torch.nn.init.xavier_normal_, torch.nn.init.xavier_uniform_, torch.nn.init.orthogonal_}

        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in self.SKIP:
                return args[0] if args else (kwargs or {})["tensor"]
            return func(*args, **(kwargs or {}))

    return SkipRandomInit()


def _expand_derived_runs(config: dict) -> None:
    """Resolution sweeps, then pruned retrains, become ordinary runs (see flowprobe.sweep)."""
    from flowprobe.sweep import expand_pruned, expand_resolutions

    config["runs"], config["figures"] = expand_resolutions(config["runs"], config["figures"])
    config["runs"], config["figures"] = expand_pruned(config["runs"], config["figures"])
