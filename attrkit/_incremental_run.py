"""Running a batch of occluded copies through a :class:`~attrkit._incremental.Plan`: local nodes on their
changed regions (read from the clean tensors around them), the rest on whole maps (see :mod:`._incremental`)."""
from __future__ import annotations

import torch
import torch.fx as fx
from torch import Tensor

from . import _incremental_ops as ops
from ._incremental_ops import Join, Pointwise, Window, call as _call, clone_first as _clone_first
from ._incremental_ops import is_shape_query as _is_shape_query


def _read(clean: Tensor, changed: Tensor, ry: Tensor, rx: Tensor, lh: int, lw: int, nidx: Tensor,
          offsets: tuple[Tensor, Tensor] | None, vy: Tensor, vx: Tensor, bidx: Tensor) -> Tensor:
    """Rows ``ry .. ry + lh`` and columns ``rx .. rx + lw`` of every row's input, ``(B, C, lh, lw)``: the clean
    tensor (``clean``, padded) where nothing changed, ``changed`` (first row ``vy``, column ``vx``) where it did.
    ``offsets``: where ``changed`` sits in the window, per row, when it lies inside for every row."""
    out = clean.unfold(2, lh, 1).unfold(3, lw, 1)[nidx, :, ry, rx]  # a copy
    h, w = changed.shape[-2:]
    if offsets is not None:
        return _paste(out, changed, *offsets)
    iy = (ry - vy)[:, None] + torch.arange(lh, device=ry.device)  # window rows in the changed region's frame
    ix = (rx - vx)[:, None] + torch.arange(lw, device=rx.device)
    inside = ((iy >= 0) & (iy < h))[:, :, None] & ((ix >= 0) & (ix < w))[:, None, :]
    new = changed[bidx[:, None, None], :, iy.clamp(0, h - 1)[:, :, None], ix.clamp(0, w - 1)[:, None, :]]
    return torch.where(inside.unsqueeze(1), new.permute(0, 3, 1, 2), out)


def _paste(out: Tensor, changed: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """Write ``changed`` into ``out`` (in place) at row ``dy``, column ``dx`` of each row of the batch."""
    b, c, height, width = out.shape
    h, w = changed.shape[-2:]
    flat = ((dy[:, None] + torch.arange(h, device=dy.device))[:, :, None] * width
            + (dx[:, None] + torch.arange(w, device=dx.device))[:, None, :]).reshape(b, 1, h * w)
    out.view(b, c, -1).scatter_(2, flat.expand(b, c, h * w), changed.reshape(b, c, h * w))
    return out


def _materialize(clean: Tensor, changed: Tensor, vy: Tensor, vx: Tensor, k: int) -> Tensor:
    """Whole maps: the clean tensor of each row's example with its changed region written in."""
    return _paste(clean.repeat(k, 1, 1, 1), changed, vy, vx)


def run_units(plan, units: range, x: Tensor, baseline: Tensor):
    """The model's output on the occluded copies ``units`` (unit-major rows, as the batched path has them)."""
    g, n, k, dev = plan.graph, x.shape[0], len(units), x.device
    nidx, bidx = torch.arange(n, device=dev).repeat(k), torch.arange(n * k, device=dev)
    starts = {}

    def at(node):  # per-row first row and column of a node's region
        if node not in starts:
            r = plan.region[node]
            starts[node] = tuple(t[units.start:units.stop].repeat_interleave(n).to(dev) for t in (r.ys, r.xs))
        return starts[node]

    def offsets(node, src):  # where the source's region sits in what the node reads, per row
        rule, out, inner = plan.rule[node], plan.region[node], plan.region[src]
        if isinstance(rule, Window):
            if not plan.contained[node]:
                return None
            dy = inner.ys + rule.pads[0] - out.ys * rule.stride[0]
            dx = inner.xs + rule.pads[2] - out.xs * rule.stride[1]
        else:
            dy, dx = inner.ys - out.ys, inner.xs - out.xs
        return tuple(t[units.start:units.stop].repeat_interleave(n).to(dev) for t in (dy, dx))

    env, whole = {g.nodes[0]: _occluded_input(plan, units, x, baseline, at, nidx)}, {}
    last_use = {a: i for i, node in enumerate(g.nodes) for a in ops._flat_nodes((node.args, node.kwargs))}

    def as_full(a):
        kind = plan.kind.get(a)
        if kind == "const":
            return g.value[a]
        if kind == "full":
            return env[a]
        if a not in whole:
            whole[a] = _materialize(g.value[a], env[a], *at(a), k)
        return whole[a]

    for i, node in enumerate(g.nodes[1:], 1):
        kind = plan.kind.get(node)
        if node.op == "output":
            return as_full(node.args[0])
        if kind == "const":
            continue
        rule = plan.rule.get(node)
        if isinstance(rule, Window):
            src, region = rule.source, plan.region[node]
            (vy, vx), (oy, ox) = at(src), at(node)
            window = _read(plan.padded[(src, rule.pads, rule.value)], env[src], oy * rule.stride[0],
                           ox * rule.stride[1], *rule.read_size(region), nidx, offsets(node, src),
                           vy + rule.pads[0], vx + rule.pads[2], bidx)
            env[node] = rule.op(window)
        else:
            if isinstance(rule, Join):
                region = plan.region[node]
                local = {s: _read(plan.padded[(s, (0, 0, 0, 0), 0.0)], env[s], *at(node), region.h, region.w,
                                  nidx, offsets(node, s) if plan.contained[node] else None, *at(s), bidx)
                         for s in rule.sources}
            elif isinstance(rule, Pointwise):
                local = {rule.source: env[rule.source]}
            elif _is_shape_query(node):
                local = {a: torch.empty((n * k, *g.value[a].shape[1:]), device="meta", dtype=g.value[a].dtype)
                         for a in ops._flat_nodes(node.args[:1]) if plan.kind.get(a) == "region"}
            else:
                local = {}
            args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda a: local[a] if a in local else as_full(a))
            target = g.mutated.get(node)
            if target is not None and plan.kind.get(target) == "const":
                args = _clone_first(args)  # never overwrite a clean value
            env[node] = _call(g.gm, node, args, kwargs)
        for a in ops._flat_nodes((node.args, node.kwargs)):  # free what no later node reads
            if last_use.get(a) == i:
                env.pop(a, None)
                whole.pop(a, None)
    raise ValueError("the traced graph has no output")


def _occluded_input(plan, units: range, x: Tensor, baseline: Tensor, at, nidx) -> Tensor:
    """The input's changed region for every row: the window's channels, rows and columns set to the baseline."""
    region, dev = plan.region[plan.graph.nodes[0]], x.device
    vy, vx = at(plan.graph.nodes[0])
    rows = vy[:, None] + torch.arange(region.h, device=dev)
    cols = vx[:, None] + torch.arange(region.w, device=dev)
    index = (nidx[:, None, None], rows[:, :, None], cols[:, None, :])
    clean = x.permute(0, 2, 3, 1)[index]
    base = baseline.expand_as(x).permute(0, 2, 3, 1)[index]
    c0, c1, r0, r1, q0, q1 = (t[units.start:units.stop].repeat_interleave(x.shape[0]).to(dev)
                              for t in plan.windows)
    channel = torch.arange(x.shape[1], device=dev)
    hit = (((channel >= c0[:, None]) & (channel < c1[:, None]))[:, None, None, :]
           & ((rows >= r0[:, None]) & (rows < r1[:, None]))[:, :, None, None]
           & ((cols >= q0[:, None]) & (cols < q1[:, None]))[:, None, :, None])
    return torch.where(hit, base, clean).permute(0, 3, 1, 2).contiguous()
