"""Multi-path networks (MPNet) of Richter et al. (ICLR 2022 submission).

Grammar: `MPNet{K}(n1:k1xk1, n2:k2xk2[, ...])`, each pathway optionally dilated with a
suffix `d{d}` (`3:3x3d2`). Four stages of blocks; a block runs its pathways in parallel on
the block input, each a chain of n x (Conv kxk, dilation d -> BN -> ReLU), and merges them by
element-wise addition (or concatenation + 1x1 conv -> BN -> ReLU). Stem: 3x3 conv -> BN -> ReLU.
Head: global average pool + linear.

Blocks per stage: the option `blocks` (4 integers, one per stage, e.g. (1, 1, 1, 1)) sets them
and overrides K; without it each stage has K blocks. The paper's K is a model *name*, not a
block count: its MPNet2 / MPNet4 are the study's `mpnet18_*` / `mpnet36_*` families (about 18 /
36 layers along the deepest path), built with `stage_seq` [1,1,1,1] or [2,2,2,2] (MPNet2) and
[2,2,2,2] or [4,4,4,4] (MPNet4) depending on the pathways (phd-lab `models/multipath.py`). So a
paper experiment must give `blocks` explicitly (config.yaml does, docs/experiments.md says why);
the count used is `model.blocks_per_stage` and is logged when the model is built.

Downsampling defaults follow the study's code (phd-lab, `models/multipath.py`): every stage,
stage 0 included, halves the resolution; the stride-2 sits in the stage's *last* block, on the
*last* conv of each pathway; channels change in the stage's first block.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import torch
from torch import nn

from flowprobe.errors import ModelSpecError
from flowprobe.models.base import Tap
from flowprobe.models.receptive import Site, Trace
from flowprobe.models.units import ConvNet, conv_unit

GRAMMAR = (
    "MPNet{K}(n1:k1xk1, n2:k2xk2[, ...]) with K blocks per stage (unless the option blocks gives them) "
    "and, per pathway, depth n >= 1, "
    "an odd square kernel k and an optional dilation suffix d{d}, "
    "e.g. MPNet2(1:3x3,4:7x7) or MPNet2(1:3x3,2:3x3d2)"
)
_SPEC = re.compile(r"^MPNet(\d+)\((.*)\)$")
_PATHWAY = re.compile(r"^(\d+):(\d+)x(\d+)(?:d(\d+))?$")
log = logging.getLogger(__name__)


@dataclass
class MPNetSpec:
    """K of the spec (blocks per stage unless the `blocks` option overrides it); pathways as
    (depth n, kernel k, dilation d)."""

    blocks_per_stage: int
    pathways: list[tuple[int, int, int]] = field(default_factory=list)

    def __str__(self) -> str:
        tokens = [f"{n}:{k}x{k}" + (f"d{d}" if d != 1 else "") for n, k, d in self.pathways]
        return f"MPNet{self.blocks_per_stage}({','.join(tokens)})"

    def labels(self) -> list[str]:
        """`min`/`max` for two pathways with different kernels (paper's p_l,min / p_l,max), else p0..pN."""
        kernels = [k for _, k, _ in self.pathways]
        if len(kernels) == 2 and kernels[0] != kernels[1]:
            return ["min", "max"] if kernels[0] < kernels[1] else ["max", "min"]
        return [f"p{i}" for i in range(len(kernels))]


def _spec_error(spec: str, problem: str) -> ModelSpecError:
    return ModelSpecError(f"model spec {spec!r}: {problem}. Write it as {GRAMMAR}")


def parse_mpnet(spec: str) -> MPNetSpec:
    """Parse an MPNet spec string; raise ModelSpecError naming the grammar on any mistake."""
    match = _SPEC.match(spec.replace(" ", ""))
    if match is None:
        raise _spec_error(spec, "not of the form MPNet{K}(...) (K, the blocks per stage, is required)")
    blocks = int(match.group(1))
    if blocks < 1:
        raise _spec_error(spec, "K (blocks per stage) must be >= 1")
    if not match.group(2):
        raise _spec_error(spec, "at least one pathway is required")
    return MPNetSpec(blocks, [_parse_pathway(spec, token) for token in match.group(2).split(",")])


def _parse_pathway(spec: str, token: str) -> tuple[int, int, int]:
    match = _PATHWAY.match(token)
    if match is None:
        raise _spec_error(spec, f"pathway {token!r} is not n:kxk or n:kxkd{{d}}")
    depth, k_h, k_w = (int(g) for g in match.group(1, 2, 3))
    dilation = int(match.group(4) or 1)
    if depth < 1:
        raise _spec_error(spec, f"pathway {token!r} has depth {depth}; a pathway needs >= 1 conv")
    if k_h != k_w:
        raise _spec_error(spec, f"pathway {token!r} has a non-square kernel {k_h}x{k_w}")
    if k_h % 2 == 0:
        raise _spec_error(spec, f"pathway {token!r} has an even kernel {k_h}; 'same' padding needs odd kernels")
    if dilation < 1:
        raise _spec_error(spec, f"pathway {token!r} has dilation {dilation}; use d1 or more")
    return depth, k_h, dilation


class AddMerge(nn.Module):
    """Element-wise sum of the pathway outputs, then a Tap."""

    def __init__(self, tap: Tap):
        super().__init__()
        self.tap = tap

    def forward(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        total = outputs[0]
        for out in outputs[1:]:
            total = total + out
        return self.tap(total)


class ConcatMerge(nn.Module):
    """Channel concatenation of the pathway outputs, then 1x1 conv -> BN -> ReLU -> Tap."""

    def __init__(self, unit: nn.Module):
        super().__init__()
        self.unit = unit

    def forward(self, outputs: list[torch.Tensor]) -> torch.Tensor:
        return self.unit(torch.cat(outputs, 1))


class MPBlock(nn.Module):
    """Parallel pathways on one input, merged (no merge for a single pathway)."""

    def __init__(self, pathways: nn.ModuleDict, merge: nn.Module | None):
        super().__init__()
        self.pathways = pathways
        self.merge = merge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [pathway(x) for pathway in self.pathways.values()]
        return outputs[0] if self.merge is None else self.merge(outputs)


@dataclass
class _Layout:
    """Build options of one MPNet (see build_mpnet)."""

    spec: MPNetSpec
    blocks: tuple[int, ...]
    widths: tuple[int, ...]
    merge: str
    downsample: str
    stride_block: str
    stage_strides: tuple[int, ...]


def build_mpnet(spec: str, num_classes: int, in_channels: int = 3, input_size: int = 32,
                widths=(64, 128, 256, 512), merge: str = "add", downsample: str = "last",
                stride_block: str = "last", stage_strides=(2, 2, 2, 2), blocks=None) -> ConvNet:
    """Build an MPNet from its spec string.

    blocks: blocks per stage, 4 positive integers (default: K of the spec in every stage);
    downsample: conv of each pathway that carries the stride ('last' as in phd-lab, or 'first'
    as the paper's text says); stride_block: block of a stage that carries it ('last' as in
    phd-lab, or 'first'); stage_strides: stride of each stage ((1, 2, 2, 2) is the CIFAR
    convention of keeping stage 0 at full resolution).
    """
    parsed = parse_mpnet(spec)
    per_stage = (parsed.blocks_per_stage,) * 4 if blocks is None else _as_tuple(blocks)
    layout = _Layout(parsed, per_stage, tuple(widths), merge, downsample, stride_block, tuple(stage_strides))
    _check_layout(layout)
    source = "from K of the spec" if blocks is None else "from the blocks option"
    log.info("%s: blocks per stage %s (%s)", spec, list(layout.blocks), source)
    trace = Trace.start(input_size)
    stem, trace = conv_unit(in_channels, layout.widths[0], 3, trace, Site("stem", -1, -1))
    stages, c_in, trunk_position = nn.Sequential(), layout.widths[0], 1
    for s, width in enumerate(layout.widths):
        stage = []
        for b in range(layout.blocks[s]):
            block, trace, trunk_position = _block(layout, s, b, c_in, width, trace, trunk_position)
            stage.append(block)
            c_in = width
        stages.append(nn.Sequential(*stage))
    # PyTorch's default initialisation, as phd-lab's MPNet (BN follows every conv)
    model = ConvNet(stem, stages, layout.widths[-1], num_classes)
    model.blocks_per_stage = layout.blocks
    return model


def _as_tuple(values) -> tuple:
    return tuple(values) if isinstance(values, (list, tuple)) else (values,)


def _check_layout(layout: _Layout) -> None:
    choices = {"merge": ("add", "concat"), "downsample": ("last", "first"), "stride_block": ("last", "first")}
    for name, allowed in choices.items():
        if getattr(layout, name) not in allowed:
            raise ModelSpecError(f"MPNet option {name}={getattr(layout, name)!r}; use one of {allowed}")
    for name in ("blocks", "widths", "stage_strides"):
        values = getattr(layout, name)
        if len(values) != 4 or not all(isinstance(v, int) and v >= 1 for v in values):
            raise ModelSpecError(f"MPNet option {name}={values!r}; give 4 positive integers, one per stage")


def _block(layout: _Layout, s: int, b: int, c_in: int, width: int, trace: Trace,
           trunk_position: int) -> tuple[MPBlock, Trace, int]:
    """One block: pathways from the block input's field, then the merge."""
    last = layout.blocks[s] - 1
    strided = b == (last if layout.stride_block == "last" else 0)
    stride = layout.stage_strides[s] if strided else 1
    pathways, ends = nn.ModuleDict(), []
    for label, (depth, kernel, dilation) in zip(layout.spec.labels(), layout.spec.pathways):
        stride_at = depth - 1 if layout.downsample == "last" else 0
        units, t = [], trace
        for j in range(depth):
            unit, t = conv_unit(c_in if j == 0 else width, width, kernel, t,
                                Site(f"s{s}.b{b}.{label}.{j}", s, b, label, j),
                                stride=stride if j == stride_at else 1, dilation=dilation)
            units.append(unit)
        pathways[label] = nn.Sequential(*units)
        ends.append(t)
    if len(ends) == 1:
        return MPBlock(pathways, None), ends[0], trunk_position
    merged = Trace.merge(*ends)
    if layout.merge == "add":
        site = Site(f"s{s}.b{b}.add", s, b, "trunk", trunk_position)
        merge = AddMerge(Tap(site.point("add", merged, merged)))
        return MPBlock(pathways, merge), merged, trunk_position + 1
    site = Site(f"s{s}.b{b}.cat", s, b, "trunk", trunk_position)
    unit, after = conv_unit(width * len(ends), width, 1, merged, site, kind="concat")
    return MPBlock(pathways, ConcatMerge(unit)), after, trunk_position + 1
