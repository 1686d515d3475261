"""Exact incremental inference for :class:`~attrkit.Occlusion`: recompute only what a patch can change.

An occluded copy of an image differs from the clean image inside the patch only. After a 3x3 convolution it
differs in the patch and a one-pixel rim, after a stride-2 layer in half as many rows, and so on, until a layer
that mixes all positions (global pooling, a linear layer, attention) spreads the change everywhere. This module
runs the model once on the clean input, keeps every intermediate tensor, and for each batch of patches
recomputes each local layer only on the region the patch can reach, reading the clean tensor around it (the
halo), until the first non-local layer; from there the copies run as usual. The result is the batched path's
result (the same arithmetic on the same numbers, up to float rounding), with a fraction of the work.

The layers are found by tracing the model with ``torch.fx``; :mod:`attrkit._incremental_ops` says which
traced operations are local and how regions move through them, :mod:`attrkit._incremental_run` runs a batch of
windows through the plan made here. Anything the trace cannot prove local is computed
the ordinary way, and a model that cannot be traced (or has hooks, several inputs, extra arguments) falls back
to the batched path. :func:`occlusion_differences` estimates the arithmetic first and is used only where it
saves enough. ``ATTRKIT_INCREMENTAL=off`` turns it off; ``=always`` uses it wherever it applies (for tests).

Opt-in and *not exact*: ``ATTRKIT_INCREMENTAL=approximate:0.4`` is Krypton's approximate mode — no changed
region grows beyond 40% of its map's height and width, and changes outside it are ignored. Less work, but a
different map: on the book's photos with EfficientNet-Lite0 (thresholds 0.4 and 0.6, windows 24 and 64 px) its
correlation with the exact map was only 0.24-0.76 (Pearson), so it stays off unless asked for.

Nakandala, Kumar & Papakonstantinou (2019), *Incremental and Approximate Inference for Faster Occlusion-based
Deep CNN Explanations*, SIGMOD, https://doi.org/10.1145/3299869.3319874 (Krypton; extended in ACM TODS 2020).
"""
from __future__ import annotations

import math
import operator
import os
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import Tensor, nn

from . import _batching
from . import _incremental_ops as ops
from . import _plumbing as plumbing
from ._incremental_ops import Join, Pointwise, Region, Window, call as _call, clone_first as _clone_first
from ._incremental_ops import is_shape_query as _is_shape_query
from ._incremental_run import run_units

MODE_ENV = "ATTRKIT_INCREMENTAL"
WORTH_IT = 0.75        # use the incremental path when its estimated cost is below this fraction of the naive one
MOVE_COST = 8.0        # estimated cost of gathering / scattering one element, in multiply-adds
FULL_FRACTION = 0.7    # a region covering more of its map than this is computed as a whole map instead


def mode() -> str:
    """``auto`` (default), ``off``, ``always`` or ``approximate:<threshold>``, from ``ATTRKIT_INCREMENTAL``."""
    value = os.environ.get(MODE_ENV, "auto").strip().lower()
    return {"0": "off", "false": "off", "no": "off", "1": "always", "true": "always", "yes": "always"}.get(value, value)


# --------------------------------------------------------------------------- tracing and the clean run
class _Tracer(fx.Tracer):
    """``torch.fx``'s tracer, keeping every convolution a leaf (timm's ``Conv2dSame`` computes its padding
    from the input size, which symbolic tracing cannot follow)."""

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return isinstance(m, nn.Conv2d) or super().is_leaf_module(m, qualified_name)


def _has_hooks(model: nn.Module) -> bool:
    from torch.nn.modules import module as M

    global_hooks = (getattr(M, "_global_forward_hooks", {}), getattr(M, "_global_forward_pre_hooks", {}))
    return any(global_hooks) or any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


_VIEWS = {"view", "reshape", "flatten", "permute", "transpose", "narrow", "split", "chunk", "expand", "unsqueeze",
          "squeeze", "unflatten", "view_as", "t", "unbind", "select", "as_strided"}


def _sharing_storage(node: fx.Node, gm: fx.GraphModule) -> list | None:
    """``node`` and the nodes it returns unchanged (identity modules, eval-mode dropout, ``contiguous``), whose
    tensor an in-place operation on ``node`` overwrites too; None when a view may share it (not followed)."""
    chain = [node]
    while isinstance(chain[-1], fx.Node):
        n = chain[-1]
        module = gm.get_submodule(n.target) if n.op == "call_module" else None
        if isinstance(module, nn.Identity) or (isinstance(module, (nn.Dropout, nn.Dropout2d)) and not module.training) \
                or (n.op == "call_method" and n.target == "contiguous"):
            chain.append(n.args[0])
        elif (n.op == "call_method" and n.target in _VIEWS) or (
                n.op == "call_function" and (n.target is operator.getitem
                                             or getattr(n.target, "__name__", "") in _VIEWS)):
            return None
        else:
            return chain
    return chain[:-1]


@dataclass
class _Graph:
    """A traced model, its clean run (every node's value), and which nodes depend on the input."""
    gm: fx.GraphModule
    nodes: list
    value: dict
    depends: set
    mutated: dict = field(default_factory=dict)  # in-place node -> the argument it overwrites


def _trace(model: nn.Module, x: Tensor) -> _Graph | None:
    """Trace ``model`` and run it once on ``x``, keeping every node's value; None when it cannot be done."""
    try:
        graph = _Tracer().trace(model)
    except Exception:  # untraceable (data-dependent control flow, ...): the batched path
        return None
    gm = fx.GraphModule(model, graph)
    nodes = list(graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        return None
    order = {n: i for i, n in enumerate(nodes)}
    depends, value, mutated = {placeholders[0]}, {}, {}
    for node in nodes:
        if node.op == "placeholder":
            value[node] = x
        elif node.op == "output":
            value[node] = value[node.args[0]] if isinstance(node.args[0], fx.Node) else None
        else:
            inputs = ops._flat_nodes((node.args, node.kwargs))
            if any(a in depends for a in inputs):
                depends.add(node)
            target = ops.mutated_argument(node, gm.get_submodule)
            if target is not None:
                shared = _sharing_storage(target, gm)
                if shared is None or any(order[u] > order[node] for t in shared for u in t.users
                                         if u is not node and u not in shared):
                    return None  # the overwritten tensor is read again later: not expressible as a data flow
                mutated[node] = target
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda n: value[n])
            value[node] = _call(gm, node, _clone_first(args) if node in mutated else args, kwargs)
    return _Graph(gm, nodes, value, depends, mutated)


# --------------------------------------------------------------------------- the plan: regions and costs
def _naive_macs(g: _Graph, node: fx.Node) -> int:
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
            k = ops._pair(m.kernel_size)
            return out.numel() * k[0] * k[1]
    if node.op == "call_function" and node.target is torch.nn.functional.conv2d:
        w = g.value.get(node.args[1])
        return out.numel() * w[0].numel() if isinstance(w, Tensor) else out.numel()
    if node.op == "call_function" and node.target in (torch.nn.functional.linear, torch.matmul, torch.bmm,
                                                      torch.mm, operator.matmul):
        a = g.value.get(node.args[0])
        return out.numel() * (a.shape[-1] if isinstance(a, Tensor) and a.dim() else 1)
    return out.numel()


@dataclass
class Plan:
    """For one model, input and set of windows: each node's kind ("const", "region", "full"), its rule and
    region, the padded clean tensors windows read from, and the estimated costs per occluded copy."""
    graph: _Graph
    kind: dict
    rule: dict
    region: dict
    padded: dict
    windows: tuple          # (channel starts, channel ends, row starts, row ends, column starts, column ends) per unit
    naive_macs: int = 0
    macs: int = 0           # arithmetic of the incremental path
    moved: int = 0          # elements gathered, compared and scattered by the incremental path
    peak_bytes: int = 0     # the largest tensor (per unit) the incremental path holds
    boundary: list = field(default_factory=list)  # nodes where the incremental part ends
    contained: dict = field(default_factory=dict)  # window node -> its input's region lies inside what it reads

    def __repr__(self) -> str:
        regions = sum(k == "region" for k in self.kind.values())
        return (f"Plan({len(self.windows[0])} windows, {regions} local nodes, "
                f"ends at {[str(b) for b in self.boundary]}, flops_ratio={self.flops_ratio:.3f}, "
                f"cost_ratio={self.cost_ratio:.3f})")

    @property
    def flops_ratio(self) -> float:
        return self.macs / max(self.naive_macs, 1)

    @property
    def cost_ratio(self) -> float:
        return (self.macs + MOVE_COST * self.moved) / max(self.naive_macs, 1)


def _unit_windows(shape, window, stride):
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


def make_plan(g: _Graph, window, stride, threshold: float | None = None) -> Plan | None:
    """Follow the changed region of every window through the graph; None when nothing can be done.
    ``threshold``: Krypton's *approximate* mode — a region never grows beyond this fraction of its map's height
    and width (changes outside it are ignored); None (the default) is exact."""
    x = g.value[g.nodes[0]]
    windows = _unit_windows(x.shape[1:], window, stride)
    height, width = x.shape[-2:]
    h, w = min(window[1], height), min(window[2], width)
    first = Region(windows[2].clamp(max=height - h), windows[4].clamp(max=width - w), h, w)
    plan = Plan(g, {g.nodes[0]: "region"}, {}, {g.nodes[0]: first}, {}, windows)
    n = x.shape[0]
    plan.moved = n * x.shape[1] * h * w * 3
    for node in g.nodes[1:]:
        if node.op == "output":
            break
        if node not in g.depends:
            plan.kind[node] = "const"
            continue
        rule = ops.classify(node, g.gm.get_submodule, plan.kind, g.value)
        out = g.value[node]
        region = None
        if isinstance(rule, Pointwise):
            region = plan.region[rule.source]
        elif isinstance(rule, Join):
            region = ops.union([plan.region[s] for s in rule.sources], *out.shape[-2:])
        elif isinstance(rule, Window):
            region = rule.output_region(plan.region[rule.source], *out.shape[-2:])
        if region is not None and threshold is not None:
            region = _truncate(region, threshold, *out.shape[-2:])
        naive = _naive_macs(g, node)
        plan.naive_macs += naive
        if region is None or region.h * region.w > FULL_FRACTION * out.shape[-2] * out.shape[-1]:
            plan.kind[node] = "full"
            plan.macs += naive
            for a in ops._flat_nodes((node.args, node.kwargs)) if not _is_shape_query(node) else ():
                if plan.kind.get(a) == "region" and a not in plan.boundary:
                    plan.boundary.append(a)
                    plan.moved += g.value[a].numel()
            if isinstance(out, Tensor):
                plan.peak_bytes = max(plan.peak_bytes, out.numel() * out.element_size() // n)
            continue
        plan.kind[node], plan.rule[node], plan.region[node] = "region", rule, region
        fraction = region.h * region.w / (out.shape[-2] * out.shape[-1])
        plan.macs += int(naive * fraction)
        plan.peak_bytes = max(plan.peak_bytes, out[:1].numel() * fraction * out.element_size())
        if isinstance(rule, Window):
            src = g.value[rule.source]
            lh, lw = rule.read_size(region)
            source = plan.region[rule.source]
            ry, rx = region.ys * rule.stride[0], region.xs * rule.stride[1]
            vy, vx = source.ys + rule.pads[0], source.xs + rule.pads[2]
            plan.contained[node] = bool(((vy >= ry) & (vy + source.h <= ry + lh)
                                         & (vx >= rx) & (vx + source.w <= rx + lw)).all())
            plan.moved += (1 if plan.contained[node] else 3) * n * src.shape[1] * lh * lw
            plan.peak_bytes = max(plan.peak_bytes, src.shape[1] * lh * lw * src.element_size())
            _pad(plan, rule.source, rule.pads, rule.value)
        elif isinstance(rule, Join):
            plan.contained[node] = all(bool(((plan.region[s].ys >= region.ys) & (plan.region[s].xs >= region.xs)
                                             & (plan.region[s].ys + plan.region[s].h <= region.ys + region.h)
                                             & (plan.region[s].xs + plan.region[s].w <= region.xs + region.w)).all())
                                       for s in rule.sources)
            plan.moved += sum(g.value[s][:, :, :region.h, :region.w].numel() for s in rule.sources)
            for s in rule.sources:
                _pad(plan, s, (0, 0, 0, 0), 0.0)
    if not any(k == "region" for n, k in plan.kind.items() if n is not g.nodes[0]):
        return None
    return plan


def _truncate(region: Region, threshold: float, height: int, width: int) -> Region:
    """The region cut to ``threshold`` of the map around its centre (Krypton's projective-field threshold)."""
    h, w = max(1, math.ceil(threshold * height)), max(1, math.ceil(threshold * width))
    if region.h <= h and region.w <= w:
        return region
    h, w = min(h, region.h), min(w, region.w)
    ys = (region.ys + (region.h - h) // 2).clamp(0, height - h)
    xs = (region.xs + (region.w - w) // 2).clamp(0, width - w)
    return Region(ys, xs, h, w)


def _pad(plan: Plan, node, pads, value):
    """The clean value of ``node`` padded for a window rule."""
    key = (node, pads, value)
    if key not in plan.padded:
        top, bottom, left, right = pads
        plan.padded[key] = torch.nn.functional.pad(plan.graph.value[node], (left, right, top, bottom), value=value)
    return plan.padded[key]


# --------------------------------------------------------------------------- the entry point for Occlusion
def prepare(model, x: Tensor, window, stride, threshold: float | None = None) -> Plan | None:
    """Trace ``model`` on ``x`` (one 4-d input) and plan the windows; None where the incremental path cannot
    be used (not a module, hooks on it, untraceable, nothing local before the first non-local layer).

    Example:
        >>> import torch
        >>> from attrkit._incremental import prepare
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        ...                             torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.Flatten(),
        ...                             torch.nn.Linear(8192, 2))
        >>> plan = prepare(model.eval(), torch.rand(1, 3, 32, 32), window=(3, 4, 4), stride=(3, 4, 4))
        >>> [plan.region[n].h for n in plan.graph.nodes[:4]]  # a 4x4 patch changes 6x6 and then 8x8 cells
        [4, 6, 6, 8]
        >>> round(plan.flops_ratio, 2)  # the linear layer sees every change: it is computed in full
        0.08
    """
    if not isinstance(model, nn.Module) or x.dim() != 4 or len(window) != 3 or _has_hooks(model):
        return None
    if any(m.training for m in model.modules()):
        return None  # batch statistics, dropout: outputs that depend on the batch (and a clean run would update them)
    with torch.no_grad():
        g = _trace(model, x)
        return None if g is None else make_plan(g, tuple(window), tuple(stride), threshold)


def occlusion_differences(forward_func, inputs, baselines, windows, strides, target=None,
                          additional_forward_args=None, perturbations_per_eval=None, max_batch_memory_mb=None):
    """``F(x) - F(x with window u occluded)`` for every window ``u``, shaped ``(n_examples, n_windows)`` as
    the batched path gives it — or None where the incremental path does not apply or would not pay off
    (then the caller runs the batched path). ``ATTRKIT_INCREMENTAL=always`` raises its errors instead."""
    how = mode()
    if how == "off" or len(inputs) != 1 or additional_forward_args is not None:
        return None
    try:
        return _differences(forward_func, inputs[0], baselines[0], windows[0], strides[0], target,
                            perturbations_per_eval, max_batch_memory_mb, how)
    except Exception:
        if how == "always":
            raise
        return None


def _differences(model, x, baseline, window, stride, target, perturbations_per_eval, max_batch_memory_mb, how):
    threshold = float(how.split(":", 1)[1]) if how.startswith("approximate:") else None
    plan = prepare(model, x, window, stride, threshold)
    if plan is None or (how == "auto" and plan.cost_ratio > WORTH_IT):
        return None
    g, n = plan.graph, x.shape[0]
    target = plumbing.validate_target(target)
    output = g.value[g.nodes[-1]]
    reference = plumbing.select_target(output, target) if isinstance(output, Tensor) else None
    if reference is None or reference.dim() == 0 or reference.shape[0] != n or reference.numel() != n:
        return None  # one output for the whole batch, or several per example: the batched path decides
    n_units = len(plan.windows[0])
    per_eval = _units_per_eval(plan, x, n_units, perturbations_per_eval, max_batch_memory_mb)
    outputs = []
    with torch.no_grad():
        for start in range(0, n_units, per_eval):
            units = range(start, min(start + per_eval, n_units))
            out = plumbing.select_target(run_units(plan, units, x, baseline), plumbing.expand_target(target, len(units)))
            outputs.append(out.reshape(len(units), n))
    return (reference.reshape(1, n) - torch.cat(outputs)).T


def _units_per_eval(plan: Plan, x: Tensor, n_units: int, perturbations_per_eval, max_batch_memory_mb) -> int:
    """Windows per pass: ``perturbations_per_eval`` when given; otherwise as many as keep the largest tensor
    of a pass within the memory budget (on the CPU, within the activation budget of the batched path)."""
    if perturbations_per_eval is not None:
        return min(plumbing.check_positive_int(perturbations_per_eval, "perturbations_per_eval"), n_units)
    budget = _batching.batch_memory_mb(max_batch_memory_mb) * 2**20
    if x.device.type == "cpu":
        budget = min(budget, _batching.CPU_ACTIVATION_BUDGET_MB * 2**20)
    return int(max(1, min(n_units, budget // max(plan.peak_bytes * x.shape[0], 1))))
