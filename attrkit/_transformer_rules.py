"""AttnLRP's rules for transformer operations, as modified gradients (one backward pass).

Achtibat et al. (2024), *AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for Transformers*, ICML,
https://arxiv.org/abs/2402.05602 .

**The gradient × input form.** Every rule here is written so that the relevance of a tensor ``t`` is
``t * g_t``, where ``g_t`` is a *modified gradient*. A rule then only says how ``g`` passes back through an
operation, and one ordinary backward pass (``torch.autograd.grad``) propagates the relevance through the whole
model. In this form:

* **affine maps** (linear layers, convolutions, embeddings, residual additions, scaling by a constant) keep
  their ordinary gradient: this is the epsilon rule in its limit ``epsilon -> 0`` (``R_x = x * W^T (R_z / z)`` with
  ``R_z = z * g_z`` gives ``g_x = W^T g_z``), with no division by ``z``, so it needs no stabiliser. A bias keeps
  its share ``b * g_z`` of the relevance, as in the paper;
* **softmax** keeps its ordinary gradient too: the paper's rule ``R_x_i = x_i (R_i - s_i sum_j R_j)`` (a Taylor
  expansion at the input with the bias absorbing the rest) is exactly ``x * J^T g`` with ``J`` softmax's Jacobian;
* **a product of two activations** (``q @ k^T``, ``attention @ v``, a gated MLP's ``act(gate) * up``): each
  factor gets half of the ordinary gradient (the paper's uniform rule): the two halves add up to the product's
  relevance because the product is bilinear;
* **elementwise nonlinearities** (GELU, SiLU, tanh, ...) and **RMSNorm** pass relevance on unchanged (identity
  rule): ``g_x = g_y * y / x``;
* **LayerNorm**: the division by the standard deviation is treated as a constant (the paper's identity rule on
  the normalisation), the centring and the affine part keep their gradient.

How they reach an unmodified model: :class:`TransformerRules` is a scoped override (a ``TorchFunctionMode``
while the attribution runs) that rewrites these torch functions however they are called — a module,
``F.gelu(x)``, ``q @ k.transpose(-1, -2)``; ``F.scaled_dot_product_attention`` (Hugging Face's default
attention, ``nn.MultiheadAttention``) is computed step by step with the rules above. Hugging Face's composite
modules (``LlamaRMSNorm``, ``NewGELUActivation``) get a module rule from :mod:`attrkit._rules`. Forward values
never change; nothing in the model is edited. (``nn.MultiheadAttention``'s body runs while the mode is paused,
so for that one call ``F.scaled_dot_product_attention``, ``torch.bmm`` and ``torch.baddbmm`` are swapped for
the rule versions and put back afterwards: not safe if another thread uses them at the same moment.)
"""
from __future__ import annotations

import math
from contextlib import ExitStack, contextmanager
from functools import partial
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from ._rules import BackwardRule, RuleSet, _function_name, _running_modules, _two_activations

T = torch.Tensor
#: relative size of the stabiliser in ``y / x`` (identity rule) where ``x`` is (nearly) zero
STABILIZER = 1e-9


# --------------------------------------------------------------------------- rules as autograd functions
class _HalfGradient(torch.autograd.Function):
    """Identity forward; half the gradient backward (one factor of a product, the uniform rule)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * 0.5


def _stable(x: Tensor) -> Tensor:
    return x + torch.where(x >= 0, STABILIZER, -STABILIZER)


class _IdentityRule(torch.autograd.Function):
    """``y = fn(x)`` elementwise; backward ``g_x = g_y * y / x``: relevance passes on unchanged."""

    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return y.clone()

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        return grad * y / _stable(x), None


def identity_rule(x: Tensor, y: Tensor) -> Tensor:
    """``y`` (computed from ``x`` elementwise), whose backward passes relevance from ``y`` to ``x`` unchanged."""
    return _IdentityRule.apply(x, y.detach())


class _LayerNormRule(torch.autograd.Function):
    """``F.layer_norm`` forward; backward with the standard deviation held constant."""

    @staticmethod
    def forward(ctx, x, shape, weight, bias, eps):
        ctx.save_for_backward(x, weight)
        ctx.dims, ctx.eps = tuple(range(-len(shape), 0)), eps
        return F.layer_norm(x, shape, weight, bias, eps)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        std = torch.sqrt(x.var(dim=ctx.dims, unbiased=False, keepdim=True) + ctx.eps)
        h = grad * (weight if weight is not None else 1.0) / std
        return h - h.mean(dim=ctx.dims, keepdim=True), None, None, None, None


def product(op, a: Tensor, b: Tensor, *rest, **kwargs) -> Tensor:
    """``op(a, b)`` with the uniform rule: each factor that carries relevance gets half the gradient."""
    half = lambda t: _HalfGradient.apply(t) if isinstance(t, Tensor) and t.requires_grad else t  # noqa: E731
    return op(half(a), half(b), *rest, **kwargs)


def attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False,
              softmax_relevance: bool = True) -> Tensor:
    """``F.scaled_dot_product_attention`` step by step, with the product rule on ``q @ k^T`` and
    ``weights @ v`` and softmax's own gradient (its AttnLRP rule in gradient × input form). With
    ``softmax_relevance=False`` the weights are constants (CP-LRP): ``v`` gets all the relevance."""
    if not softmax_relevance:
        q, k = q.detach(), k.detach()
    if enable_gqa and k.size(-3) != q.size(-3):
        k = k.repeat_interleave(q.size(-3) // k.size(-3), dim=-3)
        v = v.repeat_interleave(q.size(-3) // v.size(-3), dim=-3)
    scale = 1.0 / math.sqrt(q.size(-1)) if scale is None else scale
    scores = _matmul(q, k.transpose(-2, -1)) * scale
    lowest = torch.finfo(scores.dtype).min
    if is_causal:
        causal = torch.ones(q.size(-2), k.size(-2), dtype=torch.bool, device=q.device).tril()
        scores = scores.masked_fill(~causal, lowest)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, lowest) if attn_mask.dtype == torch.bool else scores + attn_mask
    weights = torch.softmax(scores, dim=-1)
    if dropout_p > 0:
        weights = F.dropout(weights, dropout_p)
    return _matmul(weights, v)


def _matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b``, with the uniform rule when both factors carry relevance."""
    return product(torch.matmul, a, b) if _two_activations((a, b)) else torch.matmul(a, b)


# --------------------------------------------------------------------------- which function gets which rule
_PRODUCTS = {torch.matmul, T.matmul, T.__matmul__, T.__rmatmul__, torch.bmm, T.bmm,
             torch.mul, T.mul, T.__mul__, T.__rmul__}
_ELEMENTWISE = {F.gelu, F.silu, F.relu, F.elu, F.selu, F.celu, F.mish, F.softplus, F.leaky_relu, F.hardswish,
                torch.relu, torch.tanh, torch.sigmoid, F.sigmoid, F.tanh, T.relu, T.tanh, T.sigmoid,
                *[f for f in (getattr(torch, "rms_norm", None), getattr(F, "rms_norm", None)) if f is not None]}
#: their ordinary gradient is their rule (softmax; reshapes and affine maps are never looked at)
_COVERED = {torch.softmax, F.softmax, T.softmax}
#: nonlinear functions with no rule here: warned about, naming the module, when called outside a module rule
_UNCOVERED = {torch.exp, T.exp, torch.log, T.log, torch.sqrt, T.sqrt, torch.rsqrt, T.rsqrt, torch.pow, T.pow,
              T.__pow__, torch.reciprocal, T.reciprocal, torch.sin, torch.cos, F.normalize, torch.norm, T.norm,
              F.log_softmax, torch.log_softmax, T.log_softmax, torch.logsumexp, torch.amax, torch.max, T.max}
_DIVISIONS = {torch.div, T.div, T.__truediv__, T.__rtruediv__}


class _Rewriter(TorchFunctionMode):
    """Applies the rules to torch functions called while it is active; notes the uncovered ones."""

    def __init__(self, hooked: dict, names: dict, softmax_relevance: bool = True):
        super().__init__()
        self.hooked, self.names, self.uncovered = hooked, names, {}
        self.attention = partial(attention, softmax_relevance=softmax_relevance)
        self.softmax_relevance = softmax_relevance

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        first = args[0] if args else kwargs.get("input")
        if func in _PRODUCTS and _two_activations(args[:2]):
            return product(func, *args, **kwargs)
        if func is torch.einsum and len(args) == 3 and _two_activations(args[1:]):
            return product(lambda a, b: func(args[0], a, b), args[1], args[2])
        if func is F.scaled_dot_product_attention:
            return self.attention(*args, **kwargs)
        if func is F.multi_head_attention_forward:
            return _with_attention_patched(func, args, kwargs, self.attention)
        if func in _COVERED and not self.softmax_relevance and _carries(first):
            return func(first.detach(), *args[1:], **kwargs) if args else func(**{**kwargs, "input": first.detach()})
        if func is F.layer_norm and _carries(first):
            return _LayerNormRule.apply(*_layer_norm_args(*args, **kwargs))
        out = func(*args, **kwargs)
        if func in _ELEMENTWISE and _carries(first) and isinstance(out, Tensor):
            return identity_rule(first, out)
        if func in _UNCOVERED and _carries(first) or func in _DIVISIONS and _two_activations(args[:2]):
            self._note(func)
        return out

    def _note(self, func):
        callers = _running_modules()
        if any(m in self.hooked for m in callers):
            return
        owner = callers[0] if callers else None
        where = f"`{self.names.get(owner, type(owner).__name__)}` ({type(owner).__name__})" if owner is not None \
            else "forward_func"
        self.uncovered.setdefault(f"{_function_name(func)} in {where}", None)


def _carries(x) -> bool:
    return isinstance(x, Tensor) and x.requires_grad


def _layer_norm_args(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    return input, tuple(normalized_shape), weight, bias, eps


def _with_attention_patched(func, args, kwargs, attention=attention):
    """``nn.MultiheadAttention``'s functional body runs while this mode is paused; for the duration of the call,
    patch the names it computes attention with: ``F.scaled_dot_product_attention`` (``need_weights=False``) and
    ``torch.bmm`` / ``torch.baddbmm`` (``need_weights=True``; and ``F.softmax`` for CP-LRP)."""
    replacements = {(F, "scaled_dot_product_attention"): attention, (torch, "bmm"): _bmm, (torch, "baddbmm"): _baddbmm}
    if not getattr(attention, "keywords", {}).get("softmax_relevance", True):
        replacements[(F, "softmax")] = partial(_constant_softmax, F.softmax)
    saved = {key: getattr(*key) for key in replacements}
    try:
        for (owner, name), replacement in replacements.items():
            setattr(owner, name, replacement)
        return func(*args, **kwargs)
    finally:
        for (owner, name), original in saved.items():
            setattr(owner, name, original)


def _constant_softmax(softmax, input, *args, **kwargs):
    return softmax(input.detach(), *args, **kwargs)


_BMM = torch.bmm


def _bmm(a, b):
    return product(_BMM, a, b) if _two_activations((a, b)) else _BMM(a, b)


def _baddbmm(c, a, b, beta=1, alpha=1):
    return beta * c + alpha * _bmm(a, b)


# --------------------------------------------------------------------------- composite modules
class IdentityModuleRule(BackwardRule):
    """Relevance passes through a module unchanged (``g_x = g_y * y / x``): for RMSNorm and for activation
    modules written out of several torch calls (Hugging Face's ``NewGELUActivation``)."""

    def forward(self, module, x, y):
        return x, y

    def backward(self, state, grad):
        x, y = state
        return grad * y / _stable(x), None


def _composite_rule(module: nn.Module) -> BackwardRule | None:
    kind = type(module)
    if kind.__name__.endswith("RMSNorm") or kind.__module__.startswith("transformers.activations"):
        return IdentityModuleRule()
    return None


TRANSFORMER_MODULE_RULES = RuleSet(_composite_rule, method="AttnLRP")


@contextmanager
def transformer_rules(model: nn.Module, softmax_relevance: bool = True) -> Iterator[_Rewriter]:
    """Apply AttnLRP's rules to ``model``'s calls while the block runs; yields the rewriter, whose
    ``uncovered`` names the nonlinear calls no rule covered. Nothing in ``model`` is changed.
    ``softmax_relevance=False``: softmax's output is a constant (CP-LRP), no relevance passes through it."""
    with ExitStack() as stack:
        hooked = stack.enter_context(TRANSFORMER_MODULE_RULES.applied(model))
        rewriter = _Rewriter(hooked, {m: n for n, m in model.named_modules()}, softmax_relevance)
        stack.enter_context(rewriter)
        yield rewriter
