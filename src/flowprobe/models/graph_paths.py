"""Forks, joins and pathways of a traced graph, and the nodes that become probe points.

A *join* is an add, a concatenation or a multiplication of two or more input-dependent maps
(squeeze-excitation gates excluded, graph_rf.is_gate). Its *fork* is its immediate dominator:
the last node every path from the input to the join passes through. Pathway i of the join
is every node between the fork and the join's i-th input (the ancestors of that input that
the fork dominates); an input that *is* the fork is an identity skip. Labels: a two-input add
whose one side is an identity or a single projection unit is a residual block, its sides
`branch` and `skip`; any other join labels its sides p0..pN in argument order. A node in
several blocks belongs to the innermost (smallest) one; nodes outside every block are `trunk`.

Probe points (by default): every conv/linear unit, taken after the norms and nonlinearity that
follow it, and every join output (after its nonlinearity), except the unit that produces the
logits. Stages are the distinct feature-map sizes, largest first; points without spatial axes
come after the last one.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from flowprobe.models.graph_rf import NodeField, is_gate

JOIN_KINDS = {
    operator.add: "add", torch.add: "add", "add": "add", operator.iadd: "add",
    operator.mul: "mul", torch.mul: "mul", "mul": "mul",
    torch.cat: "concat", torch.concat: "concat",
}
UNIT_MODULES = {nn.Conv1d: "conv", nn.Conv2d: "conv", nn.Conv3d: "conv", nn.Linear: "linear"}
UNIT_FUNCTIONS = {F.conv2d: "conv", F.linear: "linear"}
# Ops a unit's probe point moves past: norms, nonlinearities, dropout (the paper's
# "after the unit's nonlinearity").
FOLLOWER_MODULES = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d, nn.ReLU, nn.ReLU6,
    nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU,
    nn.PReLU, nn.Mish, nn.Dropout, nn.Identity,
)
FOLLOWER_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.gelu, F.silu, F.hardswish, F.hardsigmoid, torch.sigmoid,
    F.sigmoid, torch.tanh, F.leaky_relu, F.elu, F.mish, F.dropout, F.batch_norm, F.layer_norm,
    "relu", "sigmoid", "tanh",
}


@dataclass
class Block:
    """One join: its fork, its inputs and, per input, the pathway label and member nodes."""

    join: fx.Node
    fork: fx.Node
    kind: str
    labels: list[str]
    inputs: list[fx.Node]
    members: list[set[fx.Node]] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(m) for m in self.members)


def join_inputs(node: fx.Node, fields: dict[fx.Node, NodeField]) -> list[fx.Node]:
    """The distinct input-dependent, non-gate inputs of a join op (empty if `node` is none)."""
    if node.op not in ("call_function", "call_method") or node.target not in JOIN_KINDS:
        return []
    seen: list[fx.Node] = []
    for arg in node.all_input_nodes:
        if arg in fields and arg not in seen and not is_gate(node, arg, fields):
            seen.append(arg)
    return seen if len(seen) >= 2 else []


def dominators(nodes: list[fx.Node], fields: dict) -> dict[fx.Node, fx.Node | None]:
    """Immediate dominator of each input-dependent node (Cooper et al. 2001, on a DAG)."""
    order = {n: i for i, n in enumerate(nodes)}
    idom: dict[fx.Node, fx.Node | None] = {}
    for node in nodes:
        preds = [a for a in node.all_input_nodes if a in fields and a in idom]
        if not preds:
            idom[node] = None
            continue
        common = preds[0]
        for other in preds[1:]:
            a, b = common, other
            while a is not b:
                while a is not None and b is not None and order[a] > order[b]:
                    a = idom[a]
                while a is not None and b is not None and order[b] > order[a]:
                    b = idom[b]
                if a is None or b is None:
                    a = b = None
            common = a
        idom[node] = common
    return idom


def _members(start: fx.Node, fork: fx.Node, fields: dict) -> set[fx.Node]:
    """Nodes between `fork` (excluded) and `start` (included), walking back from `start`."""
    if start is fork:
        return set()
    found, stack = {start}, [start]
    while stack:
        for arg in stack.pop().all_input_nodes:
            if arg in fields and arg is not fork and arg not in found:
                found.add(arg)
                stack.append(arg)
    return found


def find_blocks(gm: fx.GraphModule, fields: dict[fx.Node, NodeField], is_unit) -> list[Block]:
    """Every join of the graph with its fork and labelled pathways, in graph order."""
    nodes = [n for n in gm.graph.nodes if n in fields]
    idom = dominators(nodes, fields)
    blocks = []
    for node in nodes:
        inputs = join_inputs(node, fields)
        if not inputs or idom[node] is None:
            continue
        fork = idom[node]
        members = [_members(a, fork, fields) for a in inputs]
        labels = _labels(node, inputs, members, fork, is_unit, fields)
        blocks.append(Block(node, fork, JOIN_KINDS[node.target], labels, inputs, members))
    return blocks


def _labels(node, inputs, members, fork, is_unit, fields) -> list[str]:
    """`branch`/`skip` for a residual add, else p0..pN. A skip is the identity or one unit that
    adds no spatial context (a 1x1 projection, strided or not): its field is the fork's."""
    units = [sum(1 for n in m if is_unit(n)) for m in members]
    if JOIN_KINDS[node.target] == "add" and len(inputs) == 2:
        for skip in (0, 1):
            other = 1 - skip
            projection = units[skip] <= 1 and fields[inputs[skip]].after.size == fields[fork].after.size
            if (inputs[skip] is fork or projection) and units[other] > units[skip]:
                labels = ["", ""]
                labels[skip], labels[other] = "skip", "branch"
                return labels
    return [f"p{i}" for i in range(len(inputs))]


def unit_kind(node: fx.Node, gm: fx.GraphModule) -> str | None:
    """'conv' or 'linear' for a unit node, else None."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        return next((kind for cls, kind in UNIT_MODULES.items() if isinstance(module, cls)), None)
    if node.op == "call_function":
        return UNIT_FUNCTIONS.get(node.target)
    return None


def _is_follower(node: fx.Node, gm: fx.GraphModule) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), FOLLOWER_MODULES)
    if node.op in ("call_function", "call_method"):
        return node.target in FOLLOWER_FUNCTIONS
    return False


def advance(node: fx.Node, gm: fx.GraphModule, stop: set[fx.Node]) -> fx.Node:
    """The last node of the single-user chain of norms/nonlinearities after `node`."""
    while len(node.users) == 1:
        (user,) = node.users
        if user in stop or not _is_follower(user, gm) or user.all_input_nodes[0] is not node:
            break
        node = user
    return node
