"""Probe points of a traced graph: where they sit (stage, block, pathway, position), their
receptive fields, and the `Tap` modules inserted at them so every stage works unchanged.

Naming: a unit's point is its module path (`layer1.0.conv1`); a join's point is the path of
the module whose forward holds it plus its kind (`layer1.0.add`, `inception3a.concat`); an
identity skip's point is its join's name plus `.skip`. Name patterns (shell-style, fnmatch)
in `include` / `exclude` select points.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatch

import torch
from torch import fx, nn

from flowprobe.errors import ModelSpecError
from flowprobe.models.base import ProbePoint, Tap
from flowprobe.models.graph_paths import JOIN_KINDS, Block, advance, find_blocks, unit_kind
from flowprobe.models.graph_rf import SPATIAL_CHW, Field, NodeField, shape_of

TAPS_ATTR = "probe_taps"


@dataclass
class GraphSite:
    """A probe point of a traced graph before numbering: the node it taps (or the skip edge fork -> join)."""

    name: str
    kind: str
    node: fx.Node  # anchor: the tapped node (the fork for an identity skip)
    order: float  # forward order
    before: Field
    after: Field
    block: Block | None = None
    pathway: str = "trunk"
    join: fx.Node | None = None  # set for identity skips: the edge fork -> join is tapped


def _inside_gate(node: fx.Node, fields: dict[fx.Node, NodeField]) -> bool:
    """A unit of a squeeze-excitation gate: it computes channel weights, not a feature map."""
    shape = shape_of(node)
    return fields[node].is_global and shape is not None and len(shape) == 4


def _module_path(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    paths = [value[0] if isinstance(value, tuple) else key for key, value in stack.items()]
    return paths[-1].split("@")[0] if paths else ""


def _innermost(node: fx.Node, blocks: list[Block]) -> tuple[Block | None, str]:
    best = None
    for block in blocks:
        for label, members in zip(block.labels, block.members):
            if node in members and (best is None or block.size < best[0].size):
                best = (block, label)
    return best if best else (None, "trunk")


def find_sites(gm: fx.GraphModule, fields: dict[fx.Node, NodeField]) -> tuple[list[GraphSite], list[Block]]:
    """Every default probe point of the graph, in forward order."""
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    blocks = find_blocks(gm, fields, lambda n: unit_kind(n, gm) is not None)
    joins = {b.join for b in blocks}
    sites, taken, names = [], set(), {}
    for node in list(fields):
        kind = unit_kind(node, gm) or (JOIN_KINDS[node.target] if node in joins else None)
        if kind is None or _inside_gate(node, fields):
            continue
        anchor = advance(node, gm, joins)
        shape = shape_of(anchor)
        is_logits = any(user.op == "output" for user in anchor.users)
        if anchor in taken or shape is None or len(shape) not in (2, 4) or is_logits:
            continue
        taken.add(anchor)
        base = node.target if node.op == "call_module" else ".".join(p for p in (_module_path(node), kind) if p)
        block, label = _innermost(node, blocks)
        if node in joins and block is None:
            block = next(b for b in blocks if b.join is node)
        sites.append(GraphSite(_unique(base, names), kind, anchor, order[anchor], fields[node].before,
                          fields[anchor].after, block, label))
    for block in blocks:
        for label, source in zip(block.labels, block.inputs):
            if source is block.fork:
                f = fields[source].after
                sites.append(GraphSite(_unique(_join_name(block, sites) + f".{label}", names), "identity", source,
                                  order[block.join] - 0.5, f, f, block, label, join=block.join))
    return sorted(sites, key=lambda s: s.order), blocks


def _join_name(block: Block, sites: list[GraphSite]) -> str:
    named = next((s.name for s in sites if s.block is block and s.pathway == "trunk" and s.kind == block.kind), None)
    return named or ".".join(p for p in (_module_path(block.join), block.kind) if p)


def _unique(name: str, names: dict[str, int]) -> str:
    count = names.get(name, 0)
    names[name] = count + 1
    return name if count == 0 else f"{name}_{count}"


def select(sites: list[GraphSite], include=None, exclude=None) -> list[GraphSite]:
    """Sites whose name matches an `include` pattern (all if none) and no `exclude` pattern."""
    chosen = [s for s in sites if not include or any(fnmatch(s.name, p) for p in include)]
    chosen = [s for s in chosen if not any(fnmatch(s.name, p) for p in exclude or ())]
    if not chosen:
        raise ModelSpecError(
            f"probe_points include={include} exclude={exclude} select no probe point; "
            f"the model's points are {', '.join(s.name for s in sites[:8])}... (see `flowprobe points SPEC`)"
        )
    return chosen


def number(sites: list[GraphSite], fields: dict[fx.Node, NodeField]) -> list[ProbePoint]:
    """ProbePoints: stage by feature-map size (largest first), block within stage, positions."""
    def size_of(site):
        node = site.block.join if site.block is not None and site.pathway != "trunk" else site.node
        return fields[node].spatial_size

    sizes = sorted({s for s in map(size_of, sites) if s is not None}, key=lambda s: -s[0] * s[1])
    stage_of = {size: i for i, size in enumerate(sizes)}
    block_index: dict[int, tuple[int, int]] = {}
    points, trunk, along = [], 0, {}
    for site in sites:
        stage = stage_of.get(size_of(site), len(sizes))
        block = -1
        if site.block is not None:
            key = id(site.block)
            if key not in block_index:
                block_index[key] = (stage, sum(1 for s, _ in block_index.values() if s == stage))
            stage, block = block_index[key]
        if site.pathway == "trunk":
            position, trunk = trunk, trunk + 1
        else:
            position = along.get((block, stage, site.pathway), 0)
            along[(block, stage, site.pathway)] = position + 1
        points.append(ProbePoint(
            name=site.name, stage=stage, block=block, pathway=site.pathway, position=position,
            kind=site.kind, receptive_field=site.after.size, input_receptive_field=site.before.size,
            jump=site.after.jump, receptive_field_min=site.after.size_min,
            input_receptive_field_min=site.before.size_min,
        ))
    return points


def insert_taps(gm: fx.GraphModule, sites: list[GraphSite], points: list[ProbePoint],
                fields: dict[fx.Node, NodeField]) -> None:
    """Put one Tap per probe point into the graph (forward order in `gm.probe_taps`)."""
    taps = nn.ModuleDict()
    gm.add_module(TAPS_ATTR, taps)
    keys = {}
    for site, point in zip(sites, points):
        keys[site.name] = f"t{len(keys)}"
        taps[keys[site.name]] = Tap(point)
    graph = gm.graph
    for site in (s for s in sites if s.join is not None):
        with graph.inserting_before(site.join):
            tap = graph.call_module(f"{TAPS_ATTR}.{keys[site.name]}", (site.node,))
        site.join.replace_input_with(site.node, tap)
    for site in (s for s in sites if s.join is None):
        _tap_after(graph, site.node, f"{TAPS_ATTR}.{keys[site.name]}", fields[site.node].spatial_dims)
    graph.lint()
    gm.recompile()


def _tap_after(graph: fx.Graph, node: fx.Node, target: str, dims) -> None:
    """node -> Tap -> users; a channels-last map is tapped in NCHW and permuted back."""
    rank = len(shape_of(node))
    with graph.inserting_after(node):
        if rank == 4 and dims is not None and tuple(dims) != SPATIAL_CHW:
            channel = next(d for d in (1, 2, 3) if d not in dims)
            to_nchw = (0, channel, *dims)
            back = tuple(to_nchw.index(d) for d in range(4))
            first = graph.call_function(torch.permute, (node, to_nchw))
            with graph.inserting_after(first):
                tap = graph.call_module(target, (first,))
            with graph.inserting_after(tap):
                last = graph.call_function(torch.permute, (tap, back))
        else:
            first = last = graph.call_module(target, (node,))
    node.replace_all_uses_with(last, delete_user_cb=lambda user: user is not first)
