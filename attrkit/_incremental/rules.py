"""Locality rules: which traced operations are *local*, and how a changed region moves through them.

A node of the traced graph is local when every output element depends only on a small spatial neighbourhood of
its inputs, so that the region where an occluded copy differs from the clean image can be followed through it:

* :class:`Pointwise` — activations, eval-mode BatchNorm, dropout in eval mode, arithmetic with a number or a
  per-channel constant: the region stays where it is;
* :class:`Window` — convolutions (any stride, padding, dilation, groups; also timm's TF-"same" ``Conv2dSame``),
  max and average pooling: the region grows by the kernel's reach and shrinks with the stride;
* :class:`Join` — residual additions, elementwise products of two local tensors, concatenation along channels:
  the region is the union of the inputs' regions.

Everything else (global pooling, flatten, linear, attention, normalisation over space, training-mode BatchNorm,
a squeeze-excitation gate multiplying a local tensor) is non-local; :func:`classify` returns None for it.
A node's :class:`Kind` says which of the three ways the run computes it.
Regions are kept per axis as a first index per unit and one size shared by all units (the largest, moved inward
at the borders), so that a batch of units has tensors of one shape.
"""
from __future__ import annotations

import enum
import math
import operator
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .trace import flat_nodes

POINTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh,
                     nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.Mish, nn.Softplus, nn.Hardtanh, nn.PReLU,
                     nn.Identity, nn.Dropout, nn.Dropout2d)
POINTWISE_FUNCTIONS = {F.relu, torch.relu, torch.relu_, F.relu_, F.relu6, F.silu, F.gelu, F.hardswish,
                       F.hardsigmoid, torch.sigmoid, F.sigmoid, torch.tanh, F.tanh, F.leaky_relu, F.elu, F.mish,
                       F.hardtanh, torch.clamp, torch.clip, F.dropout, F.batch_norm, operator.neg, torch.neg}
POINTWISE_METHODS = {"relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clamp_min",
                     "clamp_max", "contiguous", "neg", "hardswish"}
BINARY_FUNCTIONS = {operator.add, operator.sub, operator.mul, operator.truediv, operator.iadd, operator.isub,
                    operator.imul, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div}
BINARY_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}


class Kind(enum.Enum):
    """How the run computes a node for the occluded copies."""
    CONST = "const"    # does not depend on the input: its clean value serves every copy
    REGION = "region"  # local: computed on the changed region only, read from the clean tensors around it
    FULL = "full"      # computed on whole maps, as the model would


@dataclass
class Region:
    """Where a node's values may differ from the clean run: rows ``ys[u] .. ys[u] + h`` and columns
    ``xs[u] .. xs[u] + w`` of unit ``u`` (index tensors on the CPU, one entry per unit)."""
    ys: Tensor
    xs: Tensor
    h: int
    w: int


def _ceil_div(a: Tensor, b: int) -> Tensor:
    return -torch.div(-a, b, rounding_mode="floor")


def fit(lo: Tensor, hi: Tensor, extent: int) -> tuple[Tensor, int]:
    """One size for all units covering the (inclusive) spans ``lo..hi`` inside ``0..extent``, and the first
    index of each unit's span, moved inward where it would stick out."""
    lo, hi = lo.clamp(min=0), hi.clamp(max=extent - 1)
    size = int((hi - lo + 1).max().clamp(min=1, max=extent)) if lo.numel() else 1
    return lo.clamp(max=extent - size).clamp(min=0), size


def union(regions: list[Region], height: int, width: int) -> Region:
    ys, h = fit(torch.stack([r.ys for r in regions]).amin(0),
                torch.stack([r.ys + r.h for r in regions]).amax(0) - 1, height)
    xs, w = fit(torch.stack([r.xs for r in regions]).amin(0),
                torch.stack([r.xs + r.w for r in regions]).amax(0) - 1, width)
    return Region(ys, xs, h, w)


@dataclass
class Pointwise:
    """Applies the node's own operation to the region's values."""
    source: object  # the fx node holding the local tensor argument


@dataclass
class Join:
    """Reads every local argument over the union of their regions, then applies the node's operation."""
    sources: list


@dataclass
class Window:
    """A sliding-window operation: ``op(window)`` is evaluated without padding on a window cut from the padded
    input. ``pads`` = (top, bottom, left, right), ``value`` the padding value."""
    source: object
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pads: tuple[int, int, int, int]
    value: float
    op: Callable[[Tensor], Tensor]
    macs_per_output: int  # multiply-adds (or comparisons) per output element

    def output_region(self, region: Region, out_h: int, out_w: int) -> Region:
        axes = []
        for starts, size, k, s, d, before, extent in ((region.ys, region.h, self.kernel[0], self.stride[0],
                                                      self.dilation[0], self.pads[0], out_h),
                                                     (region.xs, region.w, self.kernel[1], self.stride[1],
                                                      self.dilation[1], self.pads[2], out_w)):
            lo = _ceil_div(starts + before - d * (k - 1), s)
            hi = torch.div(starts + size - 1 + before, s, rounding_mode="floor")
            axes.append(fit(lo, hi, extent))
        (ys, h), (xs, w) = axes
        return Region(ys, xs, h, w)

    def read_size(self, out: Region) -> tuple[int, int]:
        """Rows and columns of padded input that ``out`` needs (it starts at ``out.ys * stride``)."""
        return ((out.h - 1) * self.stride[0] + self.dilation[0] * (self.kernel[0] - 1) + 1,
                (out.w - 1) * self.stride[1] + self.dilation[1] * (self.kernel[1] - 1) + 1)


def pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _conv_pads(padding, kernel, stride, dilation, height, width) -> tuple[int, int, int, int] | None:
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding != "same":
            return None
        th, tw = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)
    ph, pw = pair(padding)
    return (ph, ph, pw, pw)


def _tf_same_pads(kernel, stride, dilation, height, width):
    """TensorFlow's "SAME" padding for an input of this size (timm's ``Conv2dSame``)."""
    def total(size, k, s, d):
        return max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
    th, tw = total(height, kernel[0], stride[0], dilation[0]), total(width, kernel[1], stride[1], dilation[1])
    return (th // 2, th - th // 2, tw // 2, tw - tw // 2)


def _conv(weight, bias, stride, dilation, groups, pads, kernel, source) -> Window:
    def op(x):
        return F.conv2d(x, weight, bias, stride, 0, dilation, groups)
    return Window(source, kernel, stride, dilation, pads, 0.0, op, weight.shape[1] * kernel[0] * kernel[1])


def _conv_module(m: nn.Conv2d, source, shape) -> Window | None:
    if m.padding_mode != "zeros":
        return None
    kernel, stride, dilation = pair(m.kernel_size), pair(m.stride), pair(m.dilation)
    if type(m).forward is nn.Conv2d.forward:
        pads = _conv_pads(m.padding, kernel, stride, dilation, *shape[-2:])
    elif type(m).__name__ == "Conv2dSame" and type(m).__module__.startswith("timm.") and pair(m.padding) == (0, 0):
        pads = _tf_same_pads(kernel, stride, dilation, *shape[-2:])
    else:
        return None
    return None if pads is None else _conv(m.weight, m.bias, stride, dilation, m.groups, pads, kernel, source)


def _pool_module(m: nn.Module, source, shape, out_shape) -> Window | None:
    kernel, stride = pair(m.kernel_size), pair(m.stride if m.stride is not None else m.kernel_size)
    ph, pw = pair(m.padding)
    height, width = shape[-2:]
    if isinstance(m, nn.MaxPool2d):
        if m.return_indices:
            return None
        dilation = pair(m.dilation)
        extra = [max(0, (o - 1) * s + d * (k - 1) + 1 - (size + 2 * p)) for o, s, d, k, size, p in
                 zip(out_shape[-2:], stride, dilation, kernel, (height, width), (ph, pw))]  # ceil_mode's overhang
        return Window(source, kernel, stride, dilation, (ph, ph + extra[0], pw, pw + extra[1]), -math.inf,
                      lambda x: F.max_pool2d(x, kernel, stride, 0, dilation), kernel[0] * kernel[1])
    floor_size = [(size + 2 * p - k) // s + 1 for size, p, k, s in zip((height, width), (ph, pw), kernel, stride)]
    if list(out_shape[-2:]) != floor_size or (not m.count_include_pad and (ph or pw)):
        return None  # a ceil_mode overhang or a divisor without the padding: positions would count differently
    divisor = m.divisor_override
    return Window(source, kernel, stride, (1, 1), (ph, ph, pw, pw), 0.0,
                  lambda x: F.avg_pool2d(x, kernel, stride, 0, False, True, divisor), kernel[0] * kernel[1])


def _spatially_constant(value) -> bool:
    """A number, or a tensor that broadcasts over the last two (spatial) dimensions."""
    if isinstance(value, (int, float, bool)):
        return True
    return isinstance(value, Tensor) and (value.dim() < 2 or tuple(value.shape[-2:]) == (1, 1))


def classify(node, module_of: Callable, kind_of: Callable, value: dict):
    """The locality rule of ``node`` (a :class:`Pointwise`, :class:`Join` or :class:`Window`), or None when it
    is not local. ``kind_of(n)`` is the :class:`Kind` of the nodes before (None for what is not a node);
    ``value[n]`` their clean-run values."""
    args = flat_nodes((node.args, node.kwargs))
    local = [a for a in args if kind_of(a) is Kind.REGION]
    if not local or any(kind_of(a) is Kind.FULL for a in args) or not isinstance(value.get(node), Tensor):
        return None
    out = value[node]
    if out.dim() != 4:
        return None
    rule = _rule(node, module_of, kind_of, value, local)
    if isinstance(rule, Pointwise) and value[rule.source].shape != out.shape:
        return None  # broadcasting that changes the shape
    if isinstance(rule, Join) and any(value[a].shape[-2:] != out.shape[-2:] or value[a].shape[0] != out.shape[0]
                                      for a in rule.sources):
        return None
    return rule


def _rule(node, module_of, kind_of, value, local):
    """The rule by the kind of operation; ``local``: the arguments that differ from the clean run."""
    first, target = (node.args[0] if node.args else None), node.target
    if node.op == "call_module":
        if len(local) != 1 or first is not local[0]:
            return None
        return _module_rule(module_of(target), first, value[first].shape, value[node].shape)
    function, method = node.op == "call_function", node.op == "call_method"
    if function and target in (torch.cat, torch.concat):
        return _cat_rule(node, kind_of)
    if (function and target in BINARY_FUNCTIONS) or (method and target in BINARY_METHODS):
        return _binary_rule(node, kind_of, value, local)
    if len(local) != 1 or first is not local[0]:
        return None
    if (function and target in POINTWISE_FUNCTIONS) or (method and target in POINTWISE_METHODS):
        return _pointwise_rule(node, kind_of, value)
    if function and target is F.conv2d:
        return _conv_function_rule(node, kind_of, value)
    return None


def _module_rule(m: nn.Module, first, shape, out_shape):
    """Convolution and pooling modules are windows; eval-mode BatchNorm, activations and eval-mode dropout
    are pointwise (their own classes only: a subclass may compute something else)."""
    if isinstance(m, nn.Conv2d):
        return _conv_module(m, first, shape)
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        return _pool_module(m, first, shape, out_shape)
    if isinstance(m, nn.BatchNorm2d):
        eval_stats = not m.training and m.track_running_stats and m.running_mean is not None
        return Pointwise(first) if eval_stats and type(m).forward is nn.BatchNorm2d.forward else None
    if isinstance(m, POINTWISE_MODULES) and type(m).forward in {t.forward for t in POINTWISE_MODULES}:
        return None if isinstance(m, (nn.Dropout, nn.Dropout2d)) and m.training else Pointwise(first)
    return None


def _cat_rule(node, kind_of):
    """Concatenation along channels of local tensors: their union."""
    first = node.args[0] if node.args else None
    dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
    parts = first if isinstance(first, (list, tuple)) else ()
    if dim in (1, -3) and parts and all(kind_of(p) is Kind.REGION for p in parts):
        return Join(list(parts))
    return None


def _binary_rule(node, kind_of, value, local):
    """Two local operands join; one local operand with a spatially constant other is pointwise."""
    operands = list(node.args[:2])
    if len(operands) == 2 and all(kind_of(o) is Kind.REGION for o in operands):
        return Join(operands)
    others = [o for o in operands if o is not local[0]]
    if len(local) == 1 and all(_spatially_constant(value.get(o, o)) for o in others):
        return Pointwise(local[0])
    return None


def _pointwise_rule(node, kind_of, value):
    """An elementwise function of the local first argument, with spatially constant other arguments (and not
    in training mode, for dropout and batch norm)."""
    first, target = node.args[0], node.target
    if target in (F.dropout, F.batch_norm):
        training = node.kwargs.get("training", node.args[5] if target is F.batch_norm and len(node.args) > 5
                                   else node.args[2] if target is F.dropout and len(node.args) > 2 else False)
        if training is not False:
            return None
    others = [a for a in flat_nodes((node.args, node.kwargs)) if a is not first]
    if all(kind_of(o) is Kind.CONST and _spatially_constant(value[o]) or target is F.batch_norm for o in others):
        return Pointwise(first)
    return None


def _conv_function_rule(node, kind_of, value):
    """``F.conv2d`` on the local first argument with constant weights (and bias)."""
    first = node.args[0]
    names = ("weight", "bias", "stride", "padding", "dilation", "groups")
    given = dict(zip(names, node.args[1:]), **node.kwargs)
    weight, bias = value.get(given.get("weight")), given.get("bias")
    bias = value.get(bias) if bias is not None else None
    if not isinstance(weight, Tensor) or kind_of(given.get("weight")) is not Kind.CONST or (
            given.get("bias") is not None and kind_of(given["bias"]) is not Kind.CONST):
        return None
    kernel, stride = tuple(weight.shape[-2:]), pair(given.get("stride", 1))
    dilation = pair(given.get("dilation", 1))
    pads = _conv_pads(given.get("padding", 0), kernel, stride, dilation, *value[first].shape[-2:])
    if pads is None:
        return None
    return _conv(weight, bias, stride, dilation, int(given.get("groups", 1)), pads, kernel, first)
