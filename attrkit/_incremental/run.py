"""Running a batch of occluded copies through a :class:`~.plan.Plan`: local nodes on their changed regions
(read from the clean tensors around them), the rest on whole maps, as the model would."""
from __future__ import annotations

import torch
import torch.fx as fx
from torch import Tensor

from .plan import Plan, Step
from .rules import Join, Kind, Pointwise, Window
from .trace import call, clone_first, flat_nodes, is_shape_query


def run_units(plan: Plan, units: range, x: Tensor, baseline: Tensor):
    """The model's output on the occluded copies ``units`` (unit-major rows, as the batched path has them)."""
    g, batch = plan.graph, _Batch(plan, units, x)
    batch.env[g.input] = _occluded_input(batch, x, baseline)
    last_use = {a: i for i, node in enumerate(g.nodes) for a in flat_nodes((node.args, node.kwargs))}
    for i, node in enumerate(g.nodes[1:], 1):
        if node.op == "output":
            return batch.as_full(node.args[0])
        step = plan.steps[node]
        if step.kind is Kind.CONST:
            continue
        batch.env[node] = batch.window(node, step) if isinstance(step.rule, Window) else batch.compute(node, step)
        for a in flat_nodes((node.args, node.kwargs)):  # free what no later node reads
            if last_use.get(a) == i:
                batch.env.pop(a, None)
                batch.whole.pop(a, None)
    raise ValueError("the traced graph has no output")


class _Batch:
    """A batch of ``k`` units in flight, ``n`` rows each (unit-major): each node's changed region (or whole
    maps) per row in ``env``, and whole maps made from a changed region for the nodes that need them."""

    def __init__(self, plan: Plan, units: range, x: Tensor):
        self.plan, self.units, self.n, self.k, self.device = plan, units, x.shape[0], len(units), x.device
        self.example = torch.arange(self.n, device=self.device).repeat(self.k)  # each row's example
        self.row = torch.arange(self.n * self.k, device=self.device)
        self.env, self.whole, self._starts = {}, {}, {}

    def per_row(self, per_unit: Tensor) -> Tensor:
        """A per-unit index tensor of the plan, for this batch's rows."""
        return per_unit[self.units.start:self.units.stop].repeat_interleave(self.n).to(self.device)

    def at(self, node) -> tuple[Tensor, Tensor]:
        """Per row, the first row and column of the node's changed region."""
        if node not in self._starts:
            region = self.plan.steps[node].region
            self._starts[node] = (self.per_row(region.ys), self.per_row(region.xs))
        return self._starts[node]

    def offsets(self, node, src) -> tuple[Tensor, Tensor] | None:
        """Per row, where the source's region sits in what the node reads; None unless it lies inside."""
        step, inner = self.plan.steps[node], self.plan.steps[src].region
        if not step.contained:
            return None
        out, rule = step.region, step.rule
        if isinstance(rule, Window):
            dy = inner.ys + rule.pads[0] - out.ys * rule.stride[0]
            dx = inner.xs + rule.pads[2] - out.xs * rule.stride[1]
        else:
            dy, dx = inner.ys - out.ys, inner.xs - out.xs
        return self.per_row(dy), self.per_row(dx)

    def as_full(self, node):
        """The node's value on whole maps, for every row."""
        kind = self.plan.kind(node)
        if kind is Kind.CONST:
            return self.plan.graph.value[node]
        if kind is Kind.FULL:
            return self.env[node]
        if node not in self.whole:
            clean = self.plan.graph.value[node].repeat(self.k, 1, 1, 1)
            self.whole[node] = _paste(clean, self.env[node], *self.at(node))
        return self.whole[node]

    def read(self, node, src, clean: Tensor, start: tuple, size: tuple, shift: tuple) -> Tensor:
        """What ``node`` reads of ``src`` for every row, ``(rows, C, *size)`` from ``start`` (per row): the clean
        tensor (``clean``, padded by ``shift``) where nothing changed, the source's changed region where it did."""
        (ry, rx), (lh, lw) = start, size
        out = clean.unfold(2, lh, 1).unfold(3, lw, 1)[self.example, :, ry, rx]  # a copy
        changed = self.env[src]
        offsets = self.offsets(node, src)
        if offsets is not None:
            return _paste(out, changed, *offsets)
        h, w = changed.shape[-2:]
        vy, vx = self.at(src)
        iy = (ry - (vy + shift[0]))[:, None] + torch.arange(lh, device=ry.device)  # rows in the changed frame
        ix = (rx - (vx + shift[1]))[:, None] + torch.arange(lw, device=rx.device)
        inside = ((iy >= 0) & (iy < h))[:, :, None] & ((ix >= 0) & (ix < w))[:, None, :]
        new = changed[self.row[:, None, None], :, iy.clamp(0, h - 1)[:, :, None], ix.clamp(0, w - 1)[:, None, :]]
        return torch.where(inside.unsqueeze(1), new.permute(0, 3, 1, 2), out)

    def window(self, node, step: Step) -> Tensor:
        """A window rule on the changed region: the window cut from the padded source, then the operation."""
        rule, region = step.rule, step.region
        oy, ox = self.at(node)
        clean = self.plan.padded(rule.source, rule.pads, rule.value)
        cut = self.read(node, rule.source, clean, (oy * rule.stride[0], ox * rule.stride[1]),
                        rule.read_size(region), (rule.pads[0], rule.pads[2]))
        return rule.op(cut)

    def compute(self, node, step: Step):
        """Any other node: the node's own operation on its changed region (joins and pointwise nodes), on a
        shape (shape queries), or on whole maps."""
        rule, g = step.rule, self.plan.graph
        if isinstance(rule, Join):
            local = {s: self.read(node, s, self.plan.padded(s, (0, 0, 0, 0), 0.0), self.at(node),
                                  (step.region.h, step.region.w), (0, 0)) for s in rule.sources}
        elif isinstance(rule, Pointwise):
            local = {rule.source: self.env[rule.source]}
        elif is_shape_query(node):
            local = {a: torch.empty((self.n * self.k, *g.value[a].shape[1:]), device="meta", dtype=g.value[a].dtype)
                     for a in flat_nodes(node.args[:1]) if self.plan.kind(a) is Kind.REGION}
        else:
            local = {}
        args, kwargs = fx.node.map_arg((node.args, node.kwargs), lambda a: local[a] if a in local else self.as_full(a))
        target = g.mutated.get(node)
        if target is not None and self.plan.kind(target) is Kind.CONST:
            args = clone_first(args)  # never overwrite a clean value
        return call(g.gm, node, args, kwargs)


def _paste(out: Tensor, changed: Tensor, dy: Tensor, dx: Tensor) -> Tensor:
    """Write ``changed`` into ``out`` (in place) at row ``dy``, column ``dx`` of each row of the batch."""
    b, c, height, width = out.shape
    h, w = changed.shape[-2:]
    flat = ((dy[:, None] + torch.arange(h, device=dy.device))[:, :, None] * width
            + (dx[:, None] + torch.arange(w, device=dx.device))[:, None, :]).reshape(b, 1, h * w)
    out.view(b, c, -1).scatter_(2, flat.expand(b, c, h * w), changed.reshape(b, c, h * w))
    return out


def _occluded_input(batch: _Batch, x: Tensor, baseline: Tensor) -> Tensor:
    """The input's changed region for every row: the window's channels, rows and columns set to the baseline."""
    plan, dev = batch.plan, x.device
    region = plan.steps[plan.graph.input].region
    vy, vx = batch.at(plan.graph.input)
    rows = vy[:, None] + torch.arange(region.h, device=dev)
    cols = vx[:, None] + torch.arange(region.w, device=dev)
    index = (batch.example[:, None, None], rows[:, :, None], cols[:, None, :])
    clean = x.permute(0, 2, 3, 1)[index]
    base = baseline.expand_as(x).permute(0, 2, 3, 1)[index]
    c0, c1, r0, r1, q0, q1 = (batch.per_row(t) for t in plan.windows)
    channel = torch.arange(x.shape[1], device=dev)
    hit = (((channel >= c0[:, None]) & (channel < c1[:, None]))[:, None, None, :]
           & ((rows >= r0[:, None]) & (rows < r1[:, None]))[:, :, None, None]
           & ((cols >= q0[:, None]) & (cols < q1[:, None]))[:, None, :, None])
    return torch.where(hit, base, clean).permute(0, 3, 1, 2).contiguous()
