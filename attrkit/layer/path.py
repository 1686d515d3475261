"""Path layer methods: the layer gradient integrated along the straight path from baseline to input.

* :class:`InternalInfluence` — :func:`~attrkit.gradient.path_integral` of layer gradients;
* :class:`LayerConductance` — the same walk, reduced by differences between steps;
* :class:`LayerIntegratedGradients` — :class:`~attrkit.IntegratedGradients` of the model re-rooted at the
  layer's activations (:class:`attrkit.layer._base.LayerSpace`).

The one-point layer methods are in :mod:`attrkit.layer.gradient`.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch

from .. import _plumbing as plumbing
from .._hooks import layer_gradients
from ..gradient import IntegratedGradients, path_integral, path_steps
from ._base import LayerGradientAttribution, LayerSpace, layer_result

__all__ = ["InternalInfluence", "LayerConductance", "LayerIntegratedGradients"]


def _path_arguments(inputs, baselines, target, additional_forward_args, n_steps):
    xs, _ = plumbing.as_tuple(inputs)
    plumbing.check_positive_int(n_steps, "n_steps")
    target, args = plumbing.validate_target(target), plumbing.format_args(additional_forward_args)
    return xs, plumbing.format_baselines(baselines, xs), target, args


class InternalInfluence(LayerGradientAttribution):
    r"""Internal influence: the layer gradient integrated along the straight path from
    the baseline to the input, :math:`\int_0^1 \partial F / \partial a\,(b + \alpha(x - b))\, d\alpha`.

    Leino et al. (2018), *Influence-Directed Explanations for Deep Convolutional
    Networks*, https://arxiv.org/abs/1802.03788

    Example:
        >>> import torch
        >>> from attrkit import InternalInfluence
        >>> from attrkit.testing import SmallCNN
        >>> model = SmallCNN()
        >>> InternalInfluence(model, model.pool).attribute(torch.rand(2, 1, 8, 8), target=2, n_steps=10).shape
        torch.Size([2, 4, 3, 3])
    """

    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None, n_steps: int = 50,
                  method: str = "gausslegendre", internal_batch_size: int | None = None,
                  attribute_to_layer_input: bool = False, grad_kwargs: dict | None = None):
        """Integrate the target's gradient with respect to the layer along the input path from ``baselines`` to
        ``inputs``.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            baselines: the reference the attribution is measured from: None (zeros), a number, a tensor
                broadcastable to the input (one per example or shared), or a tuple of those, one per input.
            target: the output to explain per example: an int, a tuple index into a multi-dimensional output, a list
                with one of those per example, or None when the model returns one number per example.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            n_steps: points on the path from baseline to input.
            method: the quadrature rule: ``"gausslegendre"`` or ``"riemann_left"``, ``"riemann_right"``,
                ``"riemann_middle"``, ``"riemann_trapezoid"``.
            internal_batch_size: path points evaluated per forward pass; None sizes the batches from the memory
                budget. The result does not depend on it.
            attribute_to_layer_input: attribute to the layer's input instead of its output.
            grad_kwargs: keyword arguments passed to ``torch.autograd.grad``.

        Returns:
            The attributions, shaped like the layer's output (or input); a tuple when the layer has several.

        Example:
            >>> import torch
            >>> from attrkit import InternalInfluence
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> InternalInfluence(model, model[0]).attribute(x, target=1, n_steps=16).shape
            torch.Size([2, 4])
        """
        xs, bs, target, args = _path_arguments(inputs, baselines, target, additional_forward_args, n_steps)

        def layer_grads(points, t, a):
            return layer_gradients(self.forward_func, self.layer, points, t, a, attribute_to_layer_input,
                                   grad_kwargs=grad_kwargs)[0]

        return layer_result(path_integral(layer_grads, xs, bs, method, n_steps, target, args, internal_batch_size))


class LayerConductance(LayerGradientAttribution):
    r"""Layer conductance: the gradient flow through each neuron of the layer,
    :math:`\sum_k \partial F / \partial a\,(p_k)\, (a(p_{k+1}) - a(p_k))` over ``n_steps + 1``
    points :math:`p_k` on the straight path from the baseline to the input (the chain
    rule, with the change of the activation between steps in place of its derivative).
    Summed over the layer, it adds up to :math:`F(x) - F(b)`; the convergence delta
    measures the gap.

    Dhamdhere, Sundararajan & Yan (2018), *How Important Is a Neuron?*,
    https://arxiv.org/abs/1805.12233 ; Shrikumar, Su & Kundaje (2018),
    *Computationally Efficient Measures of Internal Neuron Importance*,
    https://arxiv.org/abs/1807.09946

    Example:
        >>> import torch
        >>> from attrkit import LayerConductance
        >>> from attrkit.testing import SmallCNN
        >>> model = SmallCNN()
        >>> x = torch.rand(2, 1, 8, 8)
        >>> attr, delta = LayerConductance(model, model.conv2).attribute(
        ...     x, target=0, n_steps=100, return_convergence_delta=True)
        >>> attr.shape
        torch.Size([2, 6, 3, 3])
        >>> gain = model(x)[:, 0] - model(torch.zeros_like(x))[:, 0]  # F(x) - F(baseline)
        >>> torch.allclose(attr.sum((1, 2, 3)) - delta, gain, atol=1e-5)
        True
    """

    _multiplies_by_inputs = True

    _has_convergence_delta = True

    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None, n_steps: int = 50,
                  method: str = "gausslegendre", internal_batch_size: int | None = None,
                  return_convergence_delta: bool = False, attribute_to_layer_input: bool = False,
                  grad_kwargs: dict | None = None):
        """Conductance: the target's path integral, attributed to the layer's neurons.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            baselines: the reference the attribution is measured from: None (zeros), a number, a tensor
                broadcastable to the input (one per example or shared), or a tuple of those, one per input.
            target: the output to explain per example: an int, a tuple index into a multi-dimensional output, a list
                with one of those per example, or None when the model returns one number per example.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            n_steps: points on the path from baseline to input.
            method: the quadrature rule: ``"gausslegendre"`` or ``"riemann_left"``, ``"riemann_right"``,
                ``"riemann_middle"``, ``"riemann_trapezoid"``.
            internal_batch_size: path points evaluated per forward pass; None sizes the batches from the memory
                budget. The result does not depend on it.
            return_convergence_delta: also return the convergence delta per example: the sum of the attributions
                minus ``F(inputs) - F(baselines)``.
            attribute_to_layer_input: attribute to the layer's input instead of its output.
            grad_kwargs: keyword arguments passed to ``torch.autograd.grad``.

        Returns:
            The attributions, shaped like the layer's output (or input); a tuple when the layer has several. With
            ``return_convergence_delta=True``, ``(attributions, delta)``.

        Example:
            >>> import torch
            >>> from attrkit import LayerConductance
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> attr, delta = LayerConductance(model, model[0]).attribute(x, target=1, n_steps=64, return_convergence_delta=True)
            >>> attr.shape
            torch.Size([2, 4])
        """
        xs, bs, target, args = _path_arguments(inputs, baselines, target, additional_forward_args, n_steps)
        _, alphas = plumbing.integration_rule(method, n_steps + 1)
        n = plumbing.batch_size_of(xs)

        def grads_and_values(points, t, a):
            grads, values = layer_gradients(self.forward_func, self.layer, points, t, a, attribute_to_layer_input,
                                            grad_kwargs=grad_kwargs)
            return grads + values

        total = previous = None
        for steps, out in path_steps(grads_and_values, xs, bs, alphas, target, args, internal_batch_size):
            rows = [o.reshape(len(steps), n, *o.shape[1:]) for o in out]
            if previous is not None:  # the last step of the previous batch pairs with this batch's first
                rows = [torch.cat([p, r]) for p, r in zip(previous, rows)]
            half = len(rows) // 2
            part = tuple((g[:-1] * (a[1:] - a[:-1])).sum(0) for g, a in zip(rows[:half], rows[half:]))
            total = part if total is None else tuple(t + p for t, p in zip(total, part))
            previous = [r[-1:] for r in rows]
        return self._with_delta(layer_result(total), return_convergence_delta, total, bs, xs, target, args)


class LayerIntegratedGradients(LayerGradientAttribution):
    r"""Integrated Gradients in the layer's space: the path runs from the layer's
    activation at the baseline to its activation at the input, with the model's
    own inputs held fixed. Attributions add up to :math:`F(x) - F(b)` when the
    layer's output is all the model uses downstream. For text models, give the
    embedding layer: the inputs stay integer token ids.

    Several layers can be given as a list; a list of results comes back (each layer
    is replaced along its own path, so none should depend only on another).

    Sundararajan, Taly & Yan (2017), *Axiomatic Attribution for Deep Networks*,
    https://arxiv.org/abs/1703.01365

    Example:
        >>> import torch
        >>> from attrkit import LayerIntegratedGradients
        >>> from attrkit.testing import TinyTextModel
        >>> model = TinyTextModel()
        >>> tokens = torch.tensor([[3, 1, 4, 1, 5]])
        >>> lig = LayerIntegratedGradients(model, model.embedding)
        >>> attr, delta = lig.attribute(tokens, baselines=torch.zeros_like(tokens), target=1,
        ...                             return_convergence_delta=True)
        >>> attr.shape, bool(delta.abs().max() < 1e-4)
        (torch.Size([1, 5, 6]), True)
    """

    _accepts_layer_list = True

    _has_convergence_delta = True

    def __init__(self, forward_func: Callable, layer, device_ids=None, multiply_by_inputs: bool = True):
        super().__init__(forward_func, layer, device_ids, multiply_by_inputs)

    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None, n_steps: int = 50,
                  method: str = "gausslegendre", internal_batch_size: int | None = None,
                  return_convergence_delta: bool = False, attribute_to_layer_input: bool = False,
                  grad_kwargs: dict | None = None):
        """Integrated Gradients at the layer: the path runs between the layer's activations for ``baselines`` and
        for ``inputs``.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            baselines: the reference the attribution is measured from: None (zeros), a number, a tensor
                broadcastable to the input (one per example or shared), or a tuple of those, one per input.
            target: the output to explain per example: an int, a tuple index into a multi-dimensional output, a list
                with one of those per example, or None when the model returns one number per example.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            n_steps: points on the path from baseline to input.
            method: the quadrature rule: ``"gausslegendre"`` or ``"riemann_left"``, ``"riemann_right"``,
                ``"riemann_middle"``, ``"riemann_trapezoid"``.
            internal_batch_size: path points evaluated per forward pass; None sizes the batches from the memory
                budget. The result does not depend on it.
            return_convergence_delta: also return the convergence delta per example: the sum of the attributions
                minus ``F(inputs) - F(baselines)``.
            attribute_to_layer_input: attribute to the layer's input instead of its output.
            grad_kwargs: keyword arguments passed to ``torch.autograd.grad``.

        Returns:
            The attributions, shaped like the layer's output (or input); a tuple when the layer has several. With
            ``return_convergence_delta=True``, ``(attributions, delta)``.

        Example:
            >>> import torch
            >>> from attrkit import LayerIntegratedGradients
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> attr, delta = LayerIntegratedGradients(model, model[0]).attribute(x, target=1, return_convergence_delta=True)
            >>> attr.shape
            torch.Size([2, 4])
        """
        xs, bs, target, args = _path_arguments(inputs, baselines, target, additional_forward_args, n_steps)
        space = LayerSpace(self.forward_func, self._layers(), xs, args, attribute_to_layer_input)
        ig = IntegratedGradients(space.function, self.multiplies_by_inputs)
        ig.gradient_func = partial(plumbing.gradients, grad_kwargs=grad_kwargs)
        attrs = ig.attribute(space.inputs, space.values_at(bs), target=target,
                             additional_forward_args=space.model_args, n_steps=n_steps, method=method,
                             internal_batch_size=internal_batch_size)
        result = space.split(attrs, several=isinstance(self.layer, list))
        return self._with_delta(result, return_convergence_delta, attrs, bs, xs, target, args)
