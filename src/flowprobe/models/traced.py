"""Any architecture: torchvision models and the user's own nn.Module, probed through the
traced graph (torch.fx) instead of hand-placed taps.

Specs: `torchvision:NAME` (a classification builder of torchvision.models, random init, head
sized to the dataset) and `import:package.module:factory` (a factory returning an nn.Module).
The model is traced, its probe points, pathways and receptive fields are read off the graph
(graph_points, graph_paths, graph_rf) and a `Tap` is inserted at each point, so the returned
GraphModule behaves like a zoo model for every stage. Options (model_options):

- weights: path of a local state dict (or a flowprobe model.pt) loaded before tracing;
- probe_points: {include: [patterns], exclude: [patterns]} on point names (fnmatch);
- leaf_modules: class names or module paths kept opaque by the tracer;
- concrete_args: {argument: value} fixed while tracing (fx.symbolic_trace's concrete_args);
- every other option goes to the builder or factory as a keyword argument.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from flowprobe.errors import ModelSpecError
from flowprobe.models.graph_points import find_sites, insert_taps, number, select
from flowprobe.models.graph_rf import node_fields

PREFIXES = ("torchvision:", "import:")
TRACE_OPTIONS = ("weights", "probe_points", "leaf_modules", "concrete_args")
# Modules whose forward reads self.training inside a wrapped function: kept opaque so the
# traced graph behaves in train and eval mode as the original.
DEFAULT_LEAVES = ("StochasticDepth",)
# Builders with auxiliary heads return a tuple in training; flowprobe trains on the logits.
# init_weights=True is what torchvision does for weights=None, said explicitly (no warning).
BUILDER_DEFAULTS = {"googlenet": {"aux_logits": False, "init_weights": True},
                    "inception_v3": {"aux_logits": False, "init_weights": True}}


def is_traced_spec(spec: str) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIXES)


def traced_factory(spec: str) -> Callable[..., nn.Module]:
    """The nn.Module factory named by `spec`; raises ModelSpecError if it does not exist."""
    kind, _, target = spec.partition(":")
    if kind == "torchvision":
        import torchvision

        names = torchvision.models.list_models(module=torchvision.models)
        if target not in names:
            raise ModelSpecError(f"{spec}: torchvision.models has no classification model {target!r}; "
                                 f"use one of {', '.join(names)}")
        return torchvision.models.get_model_builder(target)
    module_name, _, attr = target.rpartition(":")
    if not module_name or not attr:
        raise ModelSpecError(f"{spec}: write an import spec as import:package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ModelSpecError(f"{spec}: cannot import {module_name} ({err}); put its package on PYTHONPATH") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelSpecError(f"{spec}: {module_name} has no callable {attr!r}")
    return factory


def traced_builder(spec: str) -> Callable[..., nn.Module]:
    """build_model's builder for a traced spec (checks the spec now, builds on call)."""
    traced_factory(spec)
    return partial(build_traced, spec)


def _construct(spec: str, num_classes: int, in_channels: int, input_size: int, options: dict) -> nn.Module:
    factory = traced_factory(spec)
    kind, _, name = spec.partition(":")
    if kind == "torchvision":
        if in_channels != 3:
            raise ModelSpecError(f"{spec}: torchvision models take 3 input channels; set channels: 3")
        kwargs = {**BUILDER_DEFAULTS.get(name, {}), **options, "num_classes": num_classes, "weights": None}
    else:
        params = inspect.signature(factory).parameters
        given = {"num_classes": num_classes, "in_channels": in_channels, "input_size": input_size}
        kwargs = {**{k: v for k, v in given.items() if k in params}, **options}
    try:
        model = _on_meta_or_cpu(factory, kwargs)
    except TypeError as err:
        raise ModelSpecError(f"{spec}: {err}; model_options are keyword arguments of the builder, plus "
                             f"{', '.join(TRACE_OPTIONS)}") from None
    if not isinstance(model, nn.Module):
        raise ModelSpecError(f"{spec}: the factory returned {type(model).__name__}, not an nn.Module")
    return model


def _on_meta_or_cpu(factory: Callable[..., nn.Module], kwargs: dict) -> nn.Module:
    """factory(**kwargs); a builder that reads tensor values (regnet) cannot run on the meta
    device of config validation, so it is built on the CPU and moved there."""
    try:
        return factory(**kwargs)
    except NotImplementedError as err:
        if "meta" not in str(err):
            raise
    with torch.device("cpu"):
        return factory(**kwargs).to("meta")


def load_weights(model: nn.Module, path: str | Path, spec: str) -> None:
    """Load a local state dict (or the state_dict of a flowprobe model.pt) into `model`."""
    path = Path(path)
    if not path.is_file():
        raise ModelSpecError(f"{spec}: weights file {path} does not exist; give the path of a local state dict")
    if next(iter(model.parameters())).is_meta:
        return  # config validation builds on the meta device: the file exists, nothing to copy
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise ModelSpecError(f"{spec}: weights {path} do not fit the model ({first}); a checkpoint's head "
                             "must have as many outputs as the dataset has classes") from None


class _Tracer(fx.Tracer):
    """fx tracer with extra leaf modules that remembers the module it was in when it failed."""

    def __init__(self, leaves: tuple[str, ...]):
        super().__init__()
        self.leaves = set(leaves) | set(DEFAULT_LEAVES)
        self.path: list[str] = []
        self.failed_at: str | None = None

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return type(m).__name__ in self.leaves or qualname in self.leaves or super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        self.path.append(self.path_of_module(m))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            self.failed_at = self.failed_at or self.path[-1]
            raise
        finally:
            self.path.pop()


def trace(model: nn.Module, spec: str, leaves=(), concrete_args=None) -> fx.GraphModule:
    """Trace `model` in train and eval mode; the two graphs must agree op for op."""
    graphs = []
    for training in (True, False):
        model.train(training)
        tracer = _Tracer(tuple(leaves))
        try:
            graph = tracer.trace(model, concrete_args=concrete_args)
        except Exception as err:  # fx raises TraceError, TypeError, RuntimeError...
            where = f"module {tracer.failed_at!r}" if tracer.failed_at else "the top-level forward"
            raise ModelSpecError(
                f"{spec}: cannot trace {where}: {str(err).splitlines()[0]}; list that module's class in "
                "model_options.leaf_modules, or fix the offending argument with model_options.concrete_args"
            ) from None
        graphs.append(fx.GraphModule(tracer.root, graph, type(model).__name__))
    _check_modes(*graphs, spec)
    return graphs[0]


def _check_modes(train_gm: fx.GraphModule, eval_gm: fx.GraphModule, spec: str) -> None:
    for a, b in zip(train_gm.graph.nodes, eval_gm.graph.nodes):
        if (a.op, _target(a)) != (b.op, _target(b)):
            stack = a.meta.get("nn_module_stack") or {}
            where = list(stack)[-1] if stack else a.name
            raise ModelSpecError(
                f"{spec}: the traced graph differs between training and evaluation at {where!r} "
                f"({a.target} vs {b.target}); list that module's class in model_options.leaf_modules"
            )
    if len(train_gm.graph.nodes) != len(eval_gm.graph.nodes):
        raise ModelSpecError(f"{spec}: the traced graph differs between training and evaluation; "
                             "list the module that branches on self.training in model_options.leaf_modules")


def _target(node: fx.Node) -> str:
    """A node's target, with fx's per-trace numbering of lifted constants removed."""
    target = str(node.target)
    return "_tensor_constant" if target.startswith("_tensor_constant") else target


def _no_inplace(gm: fx.GraphModule) -> None:
    """Out-of-place ops only: a Tap's output must stay the tensor the next layer consumed."""
    for module in gm.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    for node in gm.graph.nodes:
        if node.kwargs.get("inplace") is True:
            node.kwargs = {**node.kwargs, "inplace": False}


def _shapes(gm: fx.GraphModule, spec: str, in_channels: int, input_size: int) -> None:
    """Every node's output shape (fx ShapeProp) for one input of the run's size, in eval mode."""
    device = next(iter(gm.parameters())).device
    gm.eval()
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # ShapeProp prints the traceback itself
            ShapeProp(gm).propagate(torch.zeros(1, in_channels, input_size, input_size, device=device))
    except RuntimeError as err:
        cause = err.__cause__ or err
        where = str(err).split("call_module[target=")[-1].split("]")[0] if "target=" in str(err) else "the forward"
        raise ModelSpecError(f"{spec}: the forward pass fails at {where} for a {input_size}x{input_size} "
                             f"input ({str(cause).splitlines()[0]}); the input size is too small for this model, "
                             "use a larger resolution") from None
    finally:
        gm.train()


def build_traced(spec: str, num_classes: int, in_channels: int = 3, input_size: int = 32, *,
                 weights: str | None = None, probe_points: dict | None = None, leaf_modules=(),
                 concrete_args: dict | None = None, **options) -> fx.GraphModule:
    """Build, trace and tap the model of a traced spec.

    Args:
        spec: `torchvision:NAME` or `import:package.module:factory`.
        num_classes, in_channels, input_size: the dataset's classes, channels and resolution.
        weights: optional local state dict loaded before tracing.
        probe_points: optional {include: [...], exclude: [...]} name patterns.
        leaf_modules, concrete_args: tracing controls (see module docstring).
        **options: keyword arguments of the builder or factory.

    Returns:
        The traced GraphModule with one Tap per probe point, in forward order.
    """
    selection = probe_points or {}
    unknown = set(selection) - {"include", "exclude"}
    if unknown:
        raise ModelSpecError(f"{spec}: probe_points has keys {sorted(unknown)}; use include and exclude")
    model = _construct(spec, num_classes, in_channels, input_size, options)
    if weights:
        load_weights(model, weights, spec)
    gm = trace(model, spec, tuple(leaf_modules or ()), concrete_args)
    _no_inplace(gm)
    _shapes(gm, spec, in_channels, input_size)
    fields = node_fields(gm)
    sites, _ = find_sites(gm, fields)
    sites = select(sites, selection.get("include"), selection.get("exclude"))
    insert_taps(gm, sites, number(sites, fields), fields)
    return gm
