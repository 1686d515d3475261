"""DeepLift and DeepLiftShap: gradients with each nonlinearity's slope replaced by a secant.

DeepLift explains ``f(x) - f(b)``, the change of the output between an input
``x`` and a reference input ``b`` (the baseline). Write every layer's change as
``Δy = m · Δx``; for linear layers ``m`` is the weight, for a nonlinearity the
**Rescale rule** takes the secant slope ``m = Δy / Δx`` instead of the
derivative. Chaining the ``m``'s backward (the chain rule, with secants in place
of derivatives) gives each input's *multiplier*, and ``multiplier · (x - b)``
adds up to ``f(x) - f(b)`` exactly (completeness).

How attrkit computes it, in three steps:

1. **One batch for both.** The model runs on ``[x; b]`` (inputs and baselines
   stacked), so every call of every nonlinearity sees its input and its
   reference value side by side: rows ``:n`` and ``n:``.
2. **Rules per call.** A forward hook on each nonlinearity module computes the
   secant slope of that call and rewires the backward pass to use it (see
   :mod:`attrkit._rules`; reused and in-place modules are handled per call).
3. **The ordinary gradient.** The objective is the target output of the ``x``
   rows; its gradient with respect to ``x`` is the multiplier.

Rules (:data:`NONLINEAR_RULES`, the default of ``DeepLift(model, rules=...)``):

* :class:`Rescale` — any elementwise activation (ReLU, ELU, LeakyReLU, Sigmoid,
  Tanh, Softplus, SiLU, ReLU6, Hardswish, GELU, ...);
* :class:`SoftmaxRescale` — Rescale, then the mean over the softmax dimension
  is subtracted (softmax ignores a shift of its inputs);
* :class:`MaxPoolRescale` — the output change is routed to the positions that
  were the maximum for the input and for the baseline.

Linear layers, convolutions, batch norm (eval mode), average pooling, additions
and reshapes keep their ordinary gradient, which is already exact for them.

Layer and neuron methods reuse the estimator: :func:`multipliers` takes the
model to hook and, separately, any objective that runs it (e.g. a neuron's
activation), and :func:`layer_multipliers` differentiates with respect to a
layer's activations instead of the inputs (through
:func:`attrkit._hooks.layer_gradients`). :func:`averaged_over_baselines` is the
pairing both DeepLiftShaps share.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _plumbing as plumbing
from ._hooks import layer_gradients
from ._rules import BackwardRule, RuleSet
from .base import GradientAttribution, flatten, require_module


# --------------------------------------------------------------------------- rules
def _halves(t: Tensor, module: nn.Module) -> tuple[Tensor, Tensor]:
    if t.dim() == 0 or t.shape[0] % 2:
        raise ValueError(
            f"DeepLift runs inputs and baselines as one batch, so {type(module).__name__} must see the batch "
            f"dimension first; it got a tensor of shape {tuple(t.shape)}."
        )
    return t.chunk(2)


def _no_change(dx: Tensor, eps: float) -> Tensor:
    """Where the input change counts as none: ``|dx| < eps``, with ``eps`` at least the dtype's smallest
    normal number (1e-10 is 0 in float16, and dividing by a subnormal change overflows)."""
    return dx.abs() < max(eps, torch.finfo(dx.dtype).tiny)


class Rescale(BackwardRule):
    """Secant slope ``(y - y_ref) / (x - x_ref)`` for an elementwise nonlinearity.

    Where the input barely changed (``|x - x_ref| < eps``) the secant is undefined
    and the ordinary derivative is used instead.
    """

    def __init__(self, eps: float = 1e-10):
        self.eps = eps

    def forward(self, module, x, y):
        (x_in, x_ref), (y_in, y_ref) = _halves(x, module), _halves(y, module)
        dx, dy = x_in - x_ref, y_in - y_ref
        flat = _no_change(dx, self.eps)
        slope = dy / torch.where(flat, torch.ones_like(dx), dx)
        return torch.cat([slope, slope]), torch.cat([flat, flat])

    def backward(self, state, grad):
        slope, flat = state
        zero = torch.zeros_like(grad)
        return torch.where(flat, zero, grad * slope), torch.where(flat, grad, zero)


class SoftmaxRescale(Rescale):
    """Rescale for softmax, then the mean over the softmax dimension is subtracted.

    Where the input barely changed, the softmax's own gradient is used (as Captum
    does). Captum subtracts one mean over the whole batch; attrkit subtracts it per
    example, so results do not depend on what else is in the batch.
    """

    def forward(self, module, x, y):
        slope, flat = super().forward(module, x, y)
        return slope, flat, y, self.softmax_dim(module, x)

    def backward(self, state, grad):
        slope, flat, y, dim = state
        derivative = y * (grad - (grad * y).sum(dim, keepdim=True))
        direct = torch.where(flat, derivative, grad * slope)
        return direct - direct.mean(dim, keepdim=True), None

    @staticmethod
    def softmax_dim(module, x) -> int:
        if isinstance(module, nn.Softmax2d):
            return -3
        if module.dim is None:  # nn.Softmax(dim=None) follows PyTorch's legacy choice
            return 0 if x.dim() in (0, 1, 3) else 1
        return module.dim


_POOLS = {nn.MaxPool1d: F.max_pool1d, nn.MaxPool2d: F.max_pool2d, nn.MaxPool3d: F.max_pool3d}


class MaxPoolRescale(BackwardRule):
    r"""DeepLift through max pooling.

    Each output's change ``y - y_ref`` is split at ``m = max(y, y_ref)``: the part
    ``m - y_ref`` goes to the input's argmax, the part ``y - m`` to the baseline's
    argmax, and each input position divides what it received by its own change
    ``x - x_ref``. Overlapping windows add up (ResNet's 3x3 stride-2 pooling).
    """

    def __init__(self, eps: float = 1e-10):
        self.eps = eps

    def forward(self, module, x, y):
        if getattr(module, "return_indices", False):
            raise ValueError(f"DeepLift does not support {type(module).__name__}(return_indices=True).")
        pool = next(f for cls, f in _POOLS.items() if isinstance(module, cls))
        _, index = pool(x, module.kernel_size, module.stride, module.padding, module.dilation,
                        ceil_mode=module.ceil_mode, return_indices=True)
        (x_in, x_ref), (y_in, y_ref), (i_in, i_ref) = _halves(x, module), _halves(y, module), index.chunk(2)
        top = torch.max(y_in, y_ref)
        return x_in - x_ref, i_in, i_ref, top - y_ref, y_in - top

    def backward(self, state, grad):
        dx, i_in, i_ref, part_in, part_ref = state
        g = grad.chunk(2)[0]
        routed = _to_positions(g * part_in, i_in, dx) + _to_positions(g * part_ref, i_ref, dx)
        derivative = _to_positions(g, i_in, dx)
        flat = _no_change(dx, self.eps)
        direct = torch.where(flat, derivative, routed / torch.where(flat, torch.ones_like(dx), dx))
        return torch.cat([direct, torch.zeros_like(direct)]), None


def _to_positions(values: Tensor, index: Tensor, like: Tensor) -> Tensor:
    """Add each pooled value to the input position its index names (the max-pool backward)."""
    out = torch.zeros(*like.shape[:2], like[0, 0].numel(), dtype=values.dtype, device=values.device)
    return out.scatter_add_(2, index.flatten(2), values.flatten(2)).view_as(like)


#: Module type -> DeepLift rule class, the default rule table. Subclasses match too. For your own
#: activation pass an extended copy: ``DeepLift(model, rules={**NONLINEAR_RULES, MyActivation: Rescale})``
#: (any elementwise function works with Rescale).
NONLINEAR_RULES: dict[type, type] = {
    **{cls: Rescale for cls in (
        nn.ReLU, nn.ReLU6, nn.ELU, nn.SELU, nn.CELU, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.Sigmoid, nn.Tanh,
        nn.Softplus, nn.SiLU, nn.GELU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.LogSigmoid,
        nn.Softsign, nn.Tanhshrink, nn.Softshrink, nn.Hardshrink, nn.Threshold,
    )},
    nn.Softmax: SoftmaxRescale,
    nn.Softmax2d: SoftmaxRescale,
    nn.MaxPool1d: MaxPoolRescale, nn.MaxPool2d: MaxPoolRescale, nn.MaxPool3d: MaxPoolRescale,
}

#: Torch functions that are nonlinear but invisible to module hooks when called in ``forward``.
_NONLINEAR_FUNCTIONS = {
    F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_, F.relu6, F.elu, F.selu,
    F.celu, F.leaky_relu, F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh, F.softplus,
    F.logsigmoid, F.sigmoid, torch.sigmoid, torch.Tensor.sigmoid, F.tanh, torch.tanh, torch.Tensor.tanh,
    F.softmax, torch.softmax, torch.Tensor.softmax, F.log_softmax, torch.log_softmax, torch.Tensor.log_softmax,
    F.max_pool1d, F.max_pool2d, F.max_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d,
    F.layer_norm, torch.layer_norm, F.group_norm, F.rms_norm,  # normalisations by the input's own statistics
    F.scaled_dot_product_attention, F.multi_head_attention_forward, torch._native_multi_head_attention,
}

#: Functions that multiply two activations (attention, squeeze-excitation, gating): no DeepLift rule covers them.
_PRODUCTS = {f: "product" for f in (
    torch.mul, torch.Tensor.mul, torch.Tensor.mul_, torch.Tensor.__mul__, torch.Tensor.__rmul__,
    torch.Tensor.__imul__, torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.einsum,
    torch.div, torch.Tensor.div, torch.Tensor.__truediv__,
)}


_ADVICE = ("The attributions may not add up to f(inputs) - f(baselines) (see return_convergence_delta); use the "
           "module form (e.g. nn.ReLU()) or pass DeepLift a `rules=` table that covers it.")


def deeplift_rules(rules: dict | None = None, eps: float = 1e-10) -> RuleSet:
    """DeepLift's :class:`~attrkit._rules.RuleSet`: ``rules`` (module type -> rule class, default
    :data:`NONLINEAR_RULES`), each rule built with ``eps``."""
    table = NONLINEAR_RULES if rules is None else rules
    if not isinstance(table, dict):
        raise TypeError(f"`rules` must be a dict of module type -> rule class, got {type(rules).__name__}.")
    return RuleSet.by_type(table, eps, method="DeepLift", watched=_NONLINEAR_FUNCTIONS, joins=_PRODUCTS,
                           advice=_ADVICE)


# --------------------------------------------------------------------------- the estimator
def _on_inputs_and_baselines(forward_func: Callable, baselines: tuple, n: int) -> Callable:
    """``f(*inputs, *args)`` that runs ``forward_func`` on ``[inputs; baselines]`` (``args``
    repeated to match) and returns the rows of the inputs."""

    def f(*inputs_and_args):
        xs, rest = inputs_and_args[: len(baselines)], inputs_and_args[len(baselines):]
        both = tuple(torch.cat([x, b.detach()]) for x, b in zip(xs, baselines))
        return forward_func(*both, *plumbing.expand_args(rest, 2))[:n]

    return f


def multipliers(model: nn.Module, forward_func: Callable, inputs: tuple, baselines: tuple, target=None,
                args: tuple = (), eps: float = 1e-10, rules: dict | None = None) -> tuple[Tensor, ...]:
    """DeepLift multipliers of ``forward_func``'s target output with respect to ``inputs``.

    The rules (``rules``, default :data:`NONLINEAR_RULES`) go on the nonlinearities of
    ``model``; ``forward_func`` is any callable ``forward_func(*inputs, *args)`` that runs
    ``model`` — the model itself or a new objective, e.g.
    :func:`attrkit._hooks.neuron_objective` for a neuron method. It is called once on the
    inputs and baselines stacked, ``[inputs; baselines]``, with ``args`` repeated to match,
    and the target is read from the ``inputs`` rows.
    """
    paired = _on_inputs_and_baselines(forward_func, baselines, plumbing.batch_size_of(inputs))
    with deeplift_rules(rules, eps).applied(model):
        return plumbing.gradients(paired, inputs, target, args)


def layer_multipliers(model: nn.Module, forward_func: Callable, layer: nn.Module, inputs: tuple,
                      baselines: tuple, target=None, args: tuple = (), eps: float = 1e-10,
                      attribute_to_input: bool = False, rules: dict | None = None, grad_kwargs: dict | None = None):
    """DeepLift multipliers with respect to ``layer``'s output (or input) and the layer's values.

    Returns ``(multipliers, values for the inputs, values for the baselines)``, a
    tuple of tensors each (one per tensor the layer produces or receives). One
    forward pass on ``[inputs; baselines]`` gives both sets of values, so paths
    that bypass the layer (skip connections) carry the baselines' values too.
    """
    n = plumbing.batch_size_of(inputs)
    paired = _on_inputs_and_baselines(forward_func, baselines, n)
    grads, values = layer_gradients(paired, layer, inputs, target, args, attribute_to_input,
                                    rules=deeplift_rules(rules, eps).applied(model), grad_kwargs=grad_kwargs)
    return tuple(g[:n] for g in grads), tuple(v[:n] for v in values), tuple(v[n:] for v in values)


def attributions_from_multipliers(mults: tuple, inputs: tuple, baselines: tuple, custom_attribution_func=None,
                                  multiply_by_inputs: bool = True) -> tuple[Tensor, ...]:
    """``mults * (inputs - baselines)``, the multipliers alone, or ``custom_attribution_func``
    called with (multipliers), (multipliers, inputs) or (multipliers, inputs, baselines)."""
    if custom_attribution_func is not None:
        out = custom_attribution_func(*(mults, inputs, baselines)[: _n_params(custom_attribution_func)])
        return out if isinstance(out, tuple) else (out,)
    if multiply_by_inputs:
        return tuple(m * (x - b) for m, x, b in zip(mults, inputs, baselines))
    return tuple(mults)


def _n_params(func) -> int:
    if not callable(func):
        raise TypeError(f"`custom_attribution_func` must be callable, got {type(func).__name__}.")
    n = len(inspect.signature(func).parameters)
    if not 1 <= n <= 3:
        raise TypeError(
            "`custom_attribution_func` must take 1 to 3 arguments: (multipliers), (multipliers, inputs) or "
            f"(multipliers, inputs, baselines); it takes {n}."
        )
    return n


class DeepLift(GradientAttribution):
    r"""DeepLIFT with the Rescale rule: multipliers from secant slopes, times ``inputs - baselines``.

    The attributions add up to ``f(inputs) - f(baselines)`` (see
    ``return_convergence_delta``) when every nonlinearity is a module with a rule
    in :data:`NONLINEAR_RULES` — ReLU, ELU, LeakyReLU, Sigmoid, Tanh, Softplus,
    SiLU, ReLU6, Hardswish, GELU and other elementwise activations, Softmax,
    MaxPool1d/2d/3d — and the model is in eval mode. Modules called more than once
    and in-place modules (torchvision's ResNets) work as they are. Nonlinearities
    called as functions (``torch.relu(x)``) keep their ordinary gradient, as in
    Captum, and trigger a warning. The rules go on ``self.model``; the gradient is
    taken of ``self.forward_func`` (the model itself, unless a layer or neuron
    method sets another objective that runs it).

    Shrikumar, Greenside & Kundaje (2017), *Learning Important Features Through
    Propagating Activation Differences*, https://arxiv.org/abs/1704.02685 ;
    Ancona et al. (2018), *Towards better understanding of gradient-based attribution
    methods for deep neural networks*, https://arxiv.org/abs/1711.06104

    Args:
        model: the ``nn.Module`` whose nonlinearities get the rules.
        multiply_by_inputs: multiply the multipliers by ``inputs - baselines``
            (global attribution); ``False`` returns the multipliers themselves.
        eps: an input change below this counts as no change; there the ordinary
            derivative replaces the secant.
        rules: module type -> rule class (:class:`Rescale`, :class:`SoftmaxRescale`,
            :class:`MaxPoolRescale` or your own :class:`~attrkit._rules.BackwardRule`);
            default :data:`NONLINEAR_RULES`. Extend a copy for your own activations:
            ``rules={**NONLINEAR_RULES, MyActivation: Rescale}``.

    Example:
        >>> import torch
        >>> from attrkit import DeepLift
        >>> from attrkit.testing import SmallCNN
        >>> dl = DeepLift(SmallCNN().eval())
        >>> attr, delta = dl.attribute(torch.rand(2, 1, 8, 8), target=0, return_convergence_delta=True)
        >>> attr.shape, bool(delta.abs().max() < 1e-5)
        (torch.Size([2, 1, 8, 8]), True)
    """

    _has_convergence_delta = True

    def __init__(self, model: nn.Module, multiply_by_inputs: bool = True, eps: float = 1e-10,
                 rules: dict | None = None):
        super().__init__(require_module(model, type(self).__name__, "it hooks its nonlinearities"), multiply_by_inputs)
        deeplift_rules(rules)  # fail early on a bad table
        self.model, self.eps, self.rules = model, eps, rules

    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None,
                  return_convergence_delta: bool = False, custom_attribution_func=None):
        """Propagate the difference from the baseline backwards with DeepLift's rules.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            baselines: the reference the attribution is measured from: None (zeros), a number, a tensor
                broadcastable to the input (one per example or shared), or a tuple of those, one per input.
            target: the output to explain per example: an int, a tuple index into a multi-dimensional output, a list
                with one of those per example, or None when the model returns one number per example.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            return_convergence_delta: also return the convergence delta per example: the sum of the attributions
                minus ``F(inputs) - F(baselines)``.
            custom_attribution_func: replaces the final ``multipliers * (inputs - baselines)``: it is called with
                the multipliers (then also the inputs and the baselines), tuples over the inputs, and returns a
                tuple of attributions.

        Returns:
            The attributions, shaped like ``inputs`` (a tuple when ``inputs`` is a tuple); with
            ``return_convergence_delta=True``, ``(attributions, delta)`` with one delta per example.

        Example:
            >>> import torch
            >>> from attrkit import DeepLift
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> attr, delta = DeepLift(model).attribute(x, baselines=torch.zeros(1, 3), target=0, return_convergence_delta=True)
            >>> bool(delta.abs().max() < 1e-5)
            True
        """
        xs, is_tuple = plumbing.as_tuple(inputs)
        bs = plumbing.format_baselines(baselines, xs)
        target, args = plumbing.validate_target(target), plumbing.format_args(additional_forward_args)
        if custom_attribution_func is not None:
            _n_params(custom_attribution_func)  # fail before running the model
        grads = multipliers(self.model, self.forward_func, xs, bs, target, args, self.eps, self.rules)
        attrs = attributions_from_multipliers(grads, xs, bs, custom_attribution_func, self.multiplies_by_inputs)
        result = plumbing.restore(attrs, is_tuple)
        return self._with_delta(result, return_convergence_delta, attrs, bs, xs, target, args)


class DeepLiftShap(DeepLift):
    r"""DeepLift averaged over a distribution of baselines: an approximation of SHAP values.

    Every input is paired with every baseline (``n_inputs * n_baselines`` DeepLift
    runs in one batch); the attributions are averaged over the baselines, and the
    convergence delta has one entry per (input, baseline) pair, ordered by input
    first.

    Lundberg & Lee (2017), *A Unified Approach to Interpreting Model Predictions*,
    https://arxiv.org/abs/1705.07874

    Example:
        >>> import torch
        >>> from attrkit import DeepLiftShap
        >>> from attrkit.testing import SmallCNN
        >>> dls = DeepLiftShap(SmallCNN().eval())
        >>> attr, delta = dls.attribute(torch.rand(2, 1, 8, 8), baselines=torch.rand(5, 1, 8, 8), target=0,
        ...                             return_convergence_delta=True)
        >>> attr.shape, delta.shape
        (torch.Size([2, 1, 8, 8]), torch.Size([10]))
    """

    def __init__(self, model: nn.Module, multiply_by_inputs: bool = True, rules: dict | None = None):
        super().__init__(model, multiply_by_inputs, rules=rules)

    def attribute(self, inputs, baselines, target=None, additional_forward_args=None,
                  return_convergence_delta: bool = False, custom_attribution_func=None):
        """DeepLift against each reference example in ``baselines``, averaged (one result per input example).

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            baselines: the reference the attribution is measured from: None (zeros), a number, a tensor
                broadcastable to the input (one per example or shared), or a tuple of those, one per input.
            target: the output to explain per example: an int, a tuple index into a multi-dimensional output, a list
                with one of those per example, or None when the model returns one number per example.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            return_convergence_delta: also return the convergence delta per example: the sum of the attributions
                minus ``F(inputs) - F(baselines)``.
            custom_attribution_func: replaces the final ``multipliers * (inputs - baselines)``: it is called with
                the multipliers (then also the inputs and the baselines), tuples over the inputs, and returns a
                tuple of attributions.

        Returns:
            The attributions, shaped like ``inputs`` (a tuple when ``inputs`` is a tuple); with
            ``return_convergence_delta=True``, ``(attributions, delta)`` with one delta per example.

        Example:
            >>> import torch
            >>> from attrkit import DeepLiftShap
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> DeepLiftShap(model).attribute(x, baselines=torch.rand(4, 3), target=0).shape
            torch.Size([2, 3])
        """
        def each_pair(xs, bs, target, args):
            return super(DeepLiftShap, self).attribute(xs, bs, target, args, return_convergence_delta,
                                                       custom_attribution_func)

        return averaged_over_baselines(each_pair, inputs, baselines, target, additional_forward_args,
                                       return_convergence_delta, plumbing.restore)


def averaged_over_baselines(attribute_pairs: Callable, inputs, baselines, target, additional_forward_args,
                            return_convergence_delta: bool, finish: Callable):
    """The DeepLiftShaps' estimator: every input paired with every baseline of the distribution
    (``n * m`` rows, input-major), ``attribute_pairs(inputs, baselines, target, args)`` run once on all
    pairs, and the attributions averaged over the baselines; ``finish(means, is_tuple)`` shapes the result.
    The delta, if asked, keeps one entry per pair."""
    xs, is_tuple = plumbing.as_tuple(inputs)
    distribution = plumbing.baseline_distribution(baselines, xs)
    n, m = plumbing.batch_size_of(xs), distribution[0].shape[0]
    out = attribute_pairs(plumbing.expand(xs, m, "interleave"), plumbing.expand(distribution, n, "repeat"),
                          plumbing.expand_target(plumbing.validate_target(target), m, "interleave"),
                          plumbing.expand_args(plumbing.format_args(additional_forward_args), m, "interleave"))
    attrs, delta = out if return_convergence_delta else (out, None)
    means = finish(tuple(a.reshape(n, m, *a.shape[1:]).mean(1) for a in flatten(attrs)), is_tuple)
    return (means, delta) if return_convergence_delta else means
