"""Receptive fields of every node of a traced graph (torch.fx), over all paths.

The zoo threads a `Trace` through its builders; a traced model has no builder, so the same
composition runs over the graph instead: per spatial axis,
r_out = r_in + (k_eff - 1) * j_in, j_out = j_in * s, k_eff = k + (k - 1)(d - 1)
(Araujo et al. 2019). Padding moves a field but does not change its size; it enters through
the feature-map sizes, which come from a shape propagation at the model's input size.
Windows are read from Conv/MaxPool/AvgPool modules and their functional forms; any other op
that shrinks the map (adaptive pooling) is a window of k = ceil(n_in / n_out), s = n_in // n_out,
and an op that removes the spatial axes (flatten, mean, a linear on a flattened map) is one
window over the whole map (k = s = n), as the zoo's global pool.

At a join the largest field is the union (base.RF.merge) and the smallest is the smallest input
(rfa-toolbox's receptive_field_min). A squeeze-excitation gate (a 1x1 map multiplied onto a
larger one) rescales channels and moves no spatial context into a position: it is left out of
both, so the fields stay those of the convolutions (docs/any_architecture.md).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from flowprobe.models.base import RF

SPATIAL_CHW = (2, 3)
_WINDOW_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MaxPool2d, nn.AvgPool2d)
# functional pools: positions of (kernel_size, stride, dilation) in their signatures
_POOL_FUNCTIONS = {F.max_pool2d: (1, 2, 4), F.avg_pool2d: (1, 2, None)}
MUL_OPS = {operator.mul, torch.mul, "mul", operator.truediv, torch.div, "div"}


@dataclass(frozen=True)
class Field:
    """Largest and smallest receptive field per spatial axis (h, w) after one node."""

    big: tuple[RF, RF]
    small: tuple[RF, RF]

    @staticmethod
    def start() -> "Field":
        return Field((RF(), RF()), (RF(), RF()))

    def window(self, kernel: tuple[int, int], stride: tuple[int, int], dilation=(1, 1)) -> "Field":
        big = tuple(f.conv(k, s, d) for f, k, s, d in zip(self.big, kernel, stride, dilation))
        small = tuple(f.conv(k, s, d) for f, k, s, d in zip(self.small, kernel, stride, dilation))
        return Field(big, small)

    @staticmethod
    def merge(fields: list["Field"]) -> "Field":
        big = tuple(RF.merge(*(f.big[a] for f in fields)) for a in range(2))
        small = tuple(min((f.small[a] for f in fields), key=lambda r: (r.size, r.jump)) for a in range(2))
        return Field(big, small)

    @property
    def size(self) -> int:
        """The field's side on the larger axis (both axes agree for square kernels)."""
        return max(f.size for f in self.big)

    @property
    def size_min(self) -> int:
        return max(f.size for f in self.small)

    @property
    def jump(self) -> int:
        return max(self.big, key=lambda f: f.size).jump


@dataclass(frozen=True)
class NodeField:
    """A node's field before its window (its input) and after it, its spatial dims and size.

    `is_global`: a 1x1 map made by pooling over the whole map (a squeeze-excitation squeeze)
    or computed only from such maps.
    """

    before: Field
    after: Field
    spatial_dims: tuple[int, ...] | None
    spatial_size: tuple[int, int] | None
    is_global: bool = False


def _pair(value) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[-1]))


def shape_of(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _tensor_inputs(node: fx.Node, fields: dict) -> list[fx.Node]:
    found: list[fx.Node] = []
    for arg in node.all_input_nodes:
        if arg in fields and arg not in found:
            found.append(arg)
    return found


def is_gate(node: fx.Node, arg: fx.Node, fields: dict) -> bool:
    """True if `arg` is a globally pooled map multiplied onto a feature map at `node`."""
    if node.target not in MUL_OPS:
        return False
    others = [a for a in node.all_input_nodes if a in fields and a is not arg]
    return fields[arg].is_global and any(not fields[a].is_global for a in others)


def _squeezes(node: fx.Node, gm: fx.GraphModule, size) -> bool:
    """True for a pool to a 1x1 map (AdaptiveAvg/MaxPool2d(1), F.adaptive_*_pool2d(x, 1), mean)."""
    if size != (1, 1):
        return False
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        return isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d))
    return node.target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d, torch.mean, "mean")


def _spatial_dims(node: fx.Node, source: fx.Node, first: NodeField, shape) -> tuple[int, ...] | None:
    """Where the spatial axes of the primary input went: permutes move them, reshapes that keep
    the trailing map (a channel shuffle's 5-D view) keep them, flattening drops them."""
    dims = first.spatial_dims
    if dims is None or shape is None:
        return None
    if node.target in (torch.permute, "permute"):
        order = node.args[1] if len(node.args) == 2 and isinstance(node.args[1], (list, tuple)) else node.args[1:]
        order = [int(o) % len(shape) for o in order]
        return tuple(order.index(d) for d in dims)
    in_shape = shape_of(source)
    if in_shape is None or len(shape) == len(in_shape):
        return dims
    trailing = tuple(range(len(in_shape) - len(dims), len(in_shape)))
    if dims == trailing and len(shape) > len(dims) and tuple(shape[-len(dims):]) == first.spatial_size:
        return tuple(range(len(shape) - len(dims), len(shape)))
    return None


def _argument(node: fx.Node, name: str, position: int | None, default):
    """A call's argument by keyword or position (None: the function has no such argument)."""
    if name in node.kwargs:
        return node.kwargs[name]
    if position is not None and len(node.args) > position:
        return node.args[position]
    return default


def _window_of(node: fx.Node, gm: fx.GraphModule):
    """(kernel, stride, dilation) of a conv/pool node, or None."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if isinstance(module, _WINDOW_MODULES):
            dilation = getattr(module, "dilation", 1)
            stride = module.stride if module.stride is not None else module.kernel_size
            return _pair(module.kernel_size), _pair(stride), _pair(dilation)
        return None
    if node.op == "call_function" and node.target is F.conv2d:
        weight = shape_of(node.args[1])
        args = dict(zip(("stride", "padding", "dilation"), node.args[3:6]), **node.kwargs)
        return (weight[2], weight[3]), _pair(args.get("stride", 1)), _pair(args.get("dilation", 1))
    if node.op == "call_function" and node.target in _POOL_FUNCTIONS:
        kernel, stride, dilation = (_argument(node, name, pos, default) for name, pos, default in zip(
            ("kernel_size", "stride", "dilation"), _POOL_FUNCTIONS[node.target], (1, None, 1)))
        return _pair(kernel), _pair(stride or kernel), _pair(dilation)
    return None


def _apply(node: fx.Node, gm: fx.GraphModule, before: Field, first: NodeField, dims, size) -> Field:
    """The field after `node`: its window, a resize, or one window over the whole map."""
    window = _window_of(node, gm)
    if window is not None:
        return before.window(*window)
    n_in = first.spatial_size
    if n_in is None:
        return before
    if size is None:  # spatial axes gone: every unit sees the whole map
        return before.window(n_in, n_in)
    if size != n_in and all(o <= i for o, i in zip(size, n_in)):
        kernel = tuple(math.ceil(i / o) for i, o in zip(n_in, size))
        return before.window(kernel, tuple(i // o for i, o in zip(n_in, size)))
    return before


def node_fields(gm: fx.GraphModule) -> dict[fx.Node, NodeField]:
    """Receptive field of every input-dependent tensor node, in graph order.

    Needs `tensor_meta` on the nodes (fx.passes.shape_prop.ShapeProp at the input size).
    """
    fields: dict[fx.Node, NodeField] = {}
    for node in gm.graph.nodes:
        shape = shape_of(node)
        if node.op == "placeholder":
            if shape is not None and len(shape) == 4:
                fields[node] = NodeField(Field.start(), Field.start(), SPATIAL_CHW, (shape[2], shape[3]))
            continue
        inputs = _tensor_inputs(node, fields)
        if node.op == "output" or not inputs:
            continue
        first = fields[inputs[0]]
        if shape is None:  # several outputs (chunk, split): their getitems carry the maps
            if isinstance(node.meta.get("tensor_meta"), (list, tuple)):
                fields[node] = first
            continue
        dims = _spatial_dims(node, inputs[0], first, shape)
        size = tuple(shape[d] for d in dims) if dims is not None else None
        kept = [a for a in inputs if not is_gate(node, a, fields)] or inputs
        before = Field.merge([fields[a].after for a in kept])
        primary = fields[kept[0]]
        squeezed = _squeezes(node, gm, size) or all(fields[a].is_global for a in kept)
        fields[node] = NodeField(before, _apply(node, gm, before, primary, dims, size), dims, size, squeezed)
    return fields
