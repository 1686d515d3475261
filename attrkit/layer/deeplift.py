"""DeepLift at a layer: the multipliers of :mod:`attrkit.deeplift`, taken with respect to a
layer's activations instead of the model's inputs.

:func:`attrkit.deeplift.layer_multipliers` runs the model once on the inputs and the
baselines stacked, with DeepLift's rules on its nonlinearities, and differentiates the
target output with respect to the layer. The same pass gives the layer's values for the
inputs, ``a(x)``, and for the baselines, ``a(b)``; the attribution of each neuron is its
multiplier times ``a(x) - a(b)``. Nothing here knows a rule.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from .. import _plumbing as plumbing
from ..base import require_module
from ..deeplift import attributions_from_multipliers, averaged_over_baselines, deeplift_rules, layer_multipliers
from ._base import LayerGradientAttribution, layer_result


class LayerDeepLift(LayerGradientAttribution):
    r"""DeepLIFT (Rescale rule) with respect to a layer: each neuron's multiplier times the
    change of its activation, :math:`m_a \cdot (a(x) - a(b))`.

    Summed over the layer, the attributions add up to :math:`F(x) - F(b)` when every
    path from the inputs to the output runs through the layer (see
    ``return_convergence_delta``) and the nonlinearities after the layer are modules with
    a DeepLift rule (see :class:`~attrkit.DeepLift`). Reused and in-place modules (as in
    torchvision's ResNets) work as they are. (A layer inside a residual block is bypassed by
    the skip connection: its attributions explain only the part of the change that flows
    through it, and the delta shows the rest.)

    Agrees with Captum, except in two places where Captum's attributions stop adding up and
    attrkit's do not: the input of a nonlinearity (``attribute_to_layer_input=True`` on a
    ReLU or a max pooling layer), and paths where two nonlinearities with rules follow each
    other directly (a ReLU feeding a max pooling layer).

    Shrikumar, Greenside & Kundaje (2017), *Learning Important Features Through
    Propagating Activation Differences*, https://arxiv.org/abs/1704.02685 ;
    Ancona et al. (2018), *Towards better understanding of gradient-based attribution
    methods for deep neural networks*, https://arxiv.org/abs/1711.06104

    Args:
        model: the ``nn.Module`` whose nonlinearities get DeepLift's rules.
        layer: the module whose output (or input, ``attribute_to_layer_input=True``) is attributed to.
        multiply_by_inputs: multiply the multipliers by ``a(x) - a(b)``; ``False`` returns the
            multipliers themselves.
        eps: an activation change below this counts as no change (the derivative is used there).
        rules: module type -> DeepLift rule class, as in :class:`~attrkit.DeepLift` (default
            :data:`attrkit.deeplift.NONLINEAR_RULES`).

    Example:
        >>> import torch
        >>> from attrkit import LayerDeepLift
        >>> from attrkit.testing import SmallCNN
        >>> model = SmallCNN().eval()
        >>> x = torch.rand(2, 1, 8, 8)
        >>> attr, delta = LayerDeepLift(model, model.conv2).attribute(x, target=0, return_convergence_delta=True)
        >>> attr.shape, bool(delta.abs().max() < 1e-5)
        (torch.Size([2, 6, 3, 3]), True)
    """

    _has_convergence_delta = True

    def __init__(self, model: nn.Module, layer: nn.Module, multiply_by_inputs: bool = True, eps: float = 1e-10,
                 rules: dict | None = None):
        super().__init__(require_module(model, type(self).__name__, "it hooks its nonlinearities"), layer,
                         multiply_by_inputs=multiply_by_inputs)
        deeplift_rules(rules)  # fail early on a bad table
        self.model, self.eps, self.rules = model, eps, rules

    def attribute(self, inputs, baselines=None, target=None, additional_forward_args=None,
                  return_convergence_delta: bool = False, attribute_to_layer_input: bool = False,
                  custom_attribution_func: Callable | None = None, grad_kwargs: dict | None = None):
        """Attribute the target output to the layer's neurons.

        Args:
            inputs, baselines, target, additional_forward_args: as in :meth:`attrkit.DeepLift.attribute`.
            return_convergence_delta: also return, per example, the layer attributions' sum minus
                ``F(x) - F(b)``.
            attribute_to_layer_input: attribute to the layer's input instead of its output.
            custom_attribution_func: replaces ``multipliers * (a(x) - a(b))``; called with
                (multipliers), (multipliers, a(x)) or (multipliers, a(x), a(b)), tuples over the
                layer's tensors, and returns a tuple.
            grad_kwargs: keyword arguments for ``torch.autograd.grad``.

        Returns:
            The attributions, shaped like the layer's output (or input); a tuple when the layer has several. With
            ``return_convergence_delta=True``, ``(attributions, delta)``.

        Example:
            >>> import torch
            >>> from attrkit import LayerDeepLift
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> LayerDeepLift(model, model[0]).attribute(x, baselines=torch.zeros(1, 3), target=1).shape
            torch.Size([2, 4])
        """
        xs, _ = plumbing.as_tuple(inputs)
        bs = plumbing.format_baselines(baselines, xs)
        target, args = plumbing.validate_target(target), plumbing.format_args(additional_forward_args)
        mults, at_x, at_b = layer_multipliers(self.model, self.forward_func, self.layer, xs, bs, target, args,
                                              self.eps, attribute_to_layer_input, self.rules, grad_kwargs)
        attrs = attributions_from_multipliers(mults, at_x, at_b, custom_attribution_func, self.multiplies_by_inputs)
        return self._with_delta(layer_result(attrs), return_convergence_delta, attrs, bs, xs, target, args)


class LayerDeepLiftShap(LayerDeepLift):
    r""":class:`LayerDeepLift` averaged over a distribution of baselines (an approximation of
    SHAP values at the layer).

    Every input is paired with every baseline, all pairs run as one batch, and the
    attributions are averaged over the baselines. The convergence delta has one entry per
    (input, baseline) pair, ordered by input first.

    Lundberg & Lee (2017), *A Unified Approach to Interpreting Model Predictions*,
    https://arxiv.org/abs/1705.07874

    Example:
        >>> import torch
        >>> from attrkit import LayerDeepLiftShap
        >>> from attrkit.testing import SmallCNN
        >>> model = SmallCNN().eval()
        >>> attr, delta = LayerDeepLiftShap(model, model.pool).attribute(
        ...     torch.rand(2, 1, 8, 8), baselines=torch.rand(5, 1, 8, 8), target=1, return_convergence_delta=True)
        >>> attr.shape, delta.shape
        (torch.Size([2, 4, 3, 3]), torch.Size([10]))
    """

    def __init__(self, model: nn.Module, layer: nn.Module, multiply_by_inputs: bool = True, rules: dict | None = None):
        super().__init__(model, layer, multiply_by_inputs, rules=rules)

    def attribute(self, inputs, baselines, target=None, additional_forward_args=None,
                  return_convergence_delta: bool = False, attribute_to_layer_input: bool = False,
                  custom_attribution_func: Callable | None = None):
        """As :meth:`LayerDeepLift.attribute`, with ``baselines`` a tensor of reference examples
        ``(n_baselines, *example_shape)`` (a tuple of them for tuple inputs, or a callable returning that).

        Args:
            target: the output to explain per example: an int, a tuple index into a multi-dimensional output, a list
                with one of those per example, or None when the model returns one number per example.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            return_convergence_delta: also return the convergence delta per example: the sum of the attributions
                minus ``F(inputs) - F(baselines)``.
            attribute_to_layer_input: attribute to the layer's input instead of its output.
            custom_attribution_func: replaces the final ``multipliers * (inputs - baselines)``: it is called with
                the multipliers (then also the inputs and the baselines), tuples over the inputs, and returns a
                tuple of attributions.

        Returns:
            The attributions, shaped like the layer's output (or input); a tuple when the layer has several. With
            ``return_convergence_delta=True``, ``(attributions, delta)``.

        Example:
            >>> import torch
            >>> from attrkit import LayerDeepLiftShap
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> LayerDeepLiftShap(model, model[0]).attribute(x, baselines=torch.rand(4, 3), target=1).shape
            torch.Size([2, 4])
        """
        def each_pair(xs, bs, target, args):
            return super(LayerDeepLiftShap, self).attribute(xs, bs, target, args, return_convergence_delta,
                                                            attribute_to_layer_input, custom_attribution_func)

        return averaged_over_baselines(each_pair, inputs, baselines, target, additional_forward_args,
                                       return_convergence_delta, lambda means, _: layer_result(means))
