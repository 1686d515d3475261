"""The plan: for one model, input and set of windows, what the run computes at each node, and its cost.

Starting from the input, where each window changes only its own patch, the changed region of every node is
followed through the locality rules (:mod:`.rules`) until a node that is not local (or whose region covers
most of its map) is met: that node and everything after it is computed on whole maps. One :class:`Step` per
node records how it is computed (its :class:`~.rules.Kind`), its rule and region; the plan adds up the
multiply-adds and the elements moved, so that the caller can tell whether the incremental path pays off.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import Tensor, nn

from .rules import Join, Kind, Pointwise, Region, Window, classify, pair, union
from .trace import Graph, flat_nodes, is_shape_query

MOVE_COST = 8.0        # estimated cost of gathering / scattering one element, in multiply-adds
FULL_FRACTION = 0.7    # a region covering more of its map than this is computed as a whole map instead


@dataclass
class Step:
    """What the run does at one node: its kind, and for a local node its rule and changed region."""
    kind: Kind
    rule: Pointwise | Join | Window | None = None
    region: Region | None = None
    contained: bool = False   # every source's region lies inside what this node reads (a paste suffices)
    boundary: bool = False    # a local node read by a whole-map node: the incremental part ends here
    padded: dict = field(default_factory=dict)  # (pads, value) -> the clean value padded, for its readers


@dataclass
class Plan:
    """One :class:`Step` per node of ``graph`` before its output, the windows (channel starts, channel ends,
    row starts, row ends, column starts, column ends: one entry per unit) and the estimated costs per
    occluded copy."""
    graph: Graph
    steps: dict
    windows: tuple
    naive_macs: int = 0
    macs: int = 0           # arithmetic of the incremental path
    moved: int = 0          # elements gathered, compared and scattered by the incremental path
    peak_bytes: int = 0     # the largest tensor (per unit) the incremental path holds

    def __repr__(self) -> str:
        return (f"Plan({len(self.windows[0])} windows, {self.n_local} local nodes, "
                f"ends at {[str(b) for b in self.boundary]}, flops_ratio={self.flops_ratio:.3f}, "
                f"cost_ratio={self.cost_ratio:.3f})")

    def kind(self, node) -> Kind | None:
        """The node's kind; None for the output and for what is not a node."""
        step = self.steps.get(node) if isinstance(node, fx.Node) else None
        return step.kind if step is not None else None

    def padded(self, node, pads: tuple, value: float) -> Tensor:
        """The clean value of ``node`` padded for a window rule (kept for every batch of units)."""
        cache = self.steps[node].padded
        if (pads, value) not in cache:
            top, bottom, left, right = pads
            cache[(pads, value)] = torch.nn.functional.pad(self.graph.value[node], (left, right, top, bottom),
                                                           value=value)
        return cache[(pads, value)]

    @property
    def n_local(self) -> int:
        """Local nodes, the input aside."""
        return sum(s.kind is Kind.REGION for n, s in self.steps.items() if n is not self.graph.input)

    @property
    def boundary(self) -> list:
        return [n for n, s in self.steps.items() if s.boundary]

    @property
    def flops_ratio(self) -> float:
        return self.macs / max(self.naive_macs, 1)

    @property
    def cost_ratio(self) -> float:
        return (self.macs + MOVE_COST * self.moved) / max(self.naive_macs, 1)


def unit_windows(shape, window, stride):
    """Per unit (row-major over the window positions, as :class:`~attrkit.Occlusion` numbers them): the
    channels, rows and columns it covers, as (start, end) index tensors, cut at the far edge."""
    axes = []
    for size, w, s in zip(shape, window, stride):
        count = -(-(size - w) // s) + 1
        starts = torch.arange(count) * s
        axes.append((starts, (starts + w).clamp(max=size)))
    grids = torch.meshgrid(*[torch.arange(len(a[0])) for a in axes], indexing="ij")
    out = []
    for (starts, ends), index in zip(axes, grids):
        out += [starts[index.reshape(-1)], ends[index.reshape(-1)]]
    return tuple(out)


def make_plan(g: Graph, window, stride, threshold: float | None = None) -> Plan | None:
    """Follow the changed region of every window through the graph; None when nothing can be done.
    ``threshold``: Krypton's *approximate* mode — a region never grows beyond this fraction of its map's height
    and width (changes outside it are ignored); None (the default) is exact."""
    x = g.value[g.input]
    windows = unit_windows(x.shape[1:], window, stride)
    height, width = x.shape[-2:]
    h, w = min(window[1], height), min(window[2], width)
    first = Region(windows[2].clamp(max=height - h), windows[4].clamp(max=width - w), h, w)
    plan = Plan(g, {g.input: Step(Kind.REGION, region=first)}, windows)
    plan.moved = x.shape[0] * x.shape[1] * h * w * 3
    for node in g.nodes[1:]:
        if node.op == "output":
            break
        if node not in g.depends:
            plan.steps[node] = Step(Kind.CONST)
        else:
            _plan_node(plan, node, threshold)
    return plan if plan.n_local else None


def _plan_node(plan: Plan, node: fx.Node, threshold: float | None) -> None:
    """Add the step of a node that depends on the input: local on its changed region, or on whole maps."""
    g = plan.graph
    rule = classify(node, g.gm.get_submodule, plan.kind, g.value)
    out = g.value[node]
    region = None
    if isinstance(rule, Pointwise):
        region = plan.steps[rule.source].region
    elif isinstance(rule, Join):
        region = union([plan.steps[s].region for s in rule.sources], *out.shape[-2:])
    elif isinstance(rule, Window):
        region = rule.output_region(plan.steps[rule.source].region, *out.shape[-2:])
    if region is not None and threshold is not None:
        region = truncate(region, threshold, *out.shape[-2:])
    naive = naive_macs(g, node)
    plan.naive_macs += naive
    if region is None or region.h * region.w > FULL_FRACTION * out.shape[-2] * out.shape[-1]:
        _plan_whole(plan, node, naive)
    else:
        _plan_local(plan, node, rule, region, naive)


def _plan_whole(plan: Plan, node: fx.Node, naive: int) -> None:
    """``node`` runs on whole maps: the local nodes it reads are materialised (the boundary)."""
    g, out = plan.graph, plan.graph.value[node]
    plan.steps[node] = Step(Kind.FULL)
    plan.macs += naive
    for a in flat_nodes((node.args, node.kwargs)) if not is_shape_query(node) else ():
        step = plan.steps.get(a)
        if step is not None and step.kind is Kind.REGION and not step.boundary:
            step.boundary = True
            plan.moved += g.value[a].numel()
    if isinstance(out, Tensor):
        plan.peak_bytes = max(plan.peak_bytes, out.numel() * out.element_size() // g.value[g.input].shape[0])


def _plan_local(plan: Plan, node: fx.Node, rule, region: Region, naive: int) -> None:
    """``node`` runs on its changed region: its share of the arithmetic, and what it reads and moves."""
    g, out, n = plan.graph, plan.graph.value[node], plan.graph.value[plan.graph.input].shape[0]
    step = plan.steps[node] = Step(Kind.REGION, rule, region)
    fraction = region.h * region.w / (out.shape[-2] * out.shape[-1])
    plan.macs += int(naive * fraction)
    plan.peak_bytes = max(plan.peak_bytes, out[:1].numel() * fraction * out.element_size())
    if isinstance(rule, Window):
        src, source = g.value[rule.source], plan.steps[rule.source].region
        lh, lw = rule.read_size(region)
        ry, rx = region.ys * rule.stride[0], region.xs * rule.stride[1]
        vy, vx = source.ys + rule.pads[0], source.xs + rule.pads[2]
        step.contained = bool(((vy >= ry) & (vy + source.h <= ry + lh) & (vx >= rx) & (vx + source.w <= rx + lw)).all())
        plan.moved += (1 if step.contained else 3) * n * src.shape[1] * lh * lw
        plan.peak_bytes = max(plan.peak_bytes, src.shape[1] * lh * lw * src.element_size())
        plan.padded(rule.source, rule.pads, rule.value)
    elif isinstance(rule, Join):
        step.contained = all(_inside(plan.steps[s].region, region) for s in rule.sources)
        plan.moved += sum(g.value[s][:, :, :region.h, :region.w].numel() for s in rule.sources)
        for s in rule.sources:
            plan.padded(s, (0, 0, 0, 0), 0.0)


def _inside(inner: Region, outer: Region) -> bool:
    """``inner`` lies inside ``outer`` for every unit."""
    return bool(((inner.ys >= outer.ys) & (inner.xs >= outer.xs) & (inner.ys + inner.h <= outer.ys + outer.h)
                 & (inner.xs + inner.w <= outer.xs + outer.w)).all())


def truncate(region: Region, threshold: float, height: int, width: int) -> Region:
    """The region cut to ``threshold`` of the map around its centre (Krypton's projective-field threshold)."""
    h, w = max(1, math.ceil(threshold * height)), max(1, math.ceil(threshold * width))
    if region.h <= h and region.w <= w:
        return region
    h, w = min(h, region.h), min(w, region.w)
    ys = (region.ys + (region.h - h) // 2).clamp(0, height - h)
    xs = (region.xs + (region.w - w) // 2).clamp(0, width - w)
    return Region(ys, xs, h, w)


def naive_macs(g: Graph, node: fx.Node) -> int:
    """Multiply-adds (or elements touched) of ``node`` on the clean batch: what one occluded copy costs."""
    out = g.value.get(node)
    if not isinstance(out, Tensor) or node.op in ("placeholder", "output", "get_attr"):
        return 0
    if node.op == "call_module":
        m = g.gm.get_submodule(node.target)
        if isinstance(m, nn.Conv2d):
            return out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        if isinstance(m, nn.Linear):
            return out.numel() * m.in_features
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            k = pair(m.kernel_size)
            return out.numel() * k[0] * k[1]
    if node.op == "call_function" and node.target is torch.nn.functional.conv2d:
        w = g.value.get(node.args[1])
        return out.numel() * w[0].numel() if isinstance(w, Tensor) else out.numel()
    if node.op == "call_function" and node.target in (torch.nn.functional.linear, torch.matmul, torch.bmm,
                                                      torch.mm, operator.matmul):
        a = g.value.get(node.args[0])
        return out.numel() * (a.shape[-1] if isinstance(a, Tensor) and a.dim() else 1)
    return out.numel()
