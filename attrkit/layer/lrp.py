"""LayerLRP: the relevance of :mod:`attrkit.lrp`, stopped at a layer.

The same rules as :class:`~attrkit.LRP` go on the model (:func:`attrkit.lrp.lrp_rules`);
the gradient is taken with respect to the layers' activations
(:func:`attrkit._hooks.layer_gradients`) and scaled by each example's output.
"""
from __future__ import annotations

from torch import nn

from .. import _plumbing as plumbing
from .._hooks import layer_gradients
from ..base import LayerAttribution
from ..lrp import LRP, check_rules, lrp_rules, times_rows


class LayerLRP(LRP, LayerAttribution):
    r"""LRP relevance of a layer's output (or input, ``attribute_to_layer_input=True``).

    ``layer`` may be one module or a list of modules (then a list of relevances,
    and of deltas, is returned). Bach et al. (2015), https://doi.org/10.1371/journal.pone.0130140

    Example:
        >>> import torch
        >>> from attrkit import LayerLRP
        >>> from attrkit.testing import SmallCNN
        >>> model = SmallCNN()
        >>> LayerLRP(model, model.conv2).attribute(torch.rand(2, 1, 8, 8), target=0).shape
        torch.Size([2, 6, 3, 3])
    """

    _accepts_layer_list = True

    def __init__(self, model: nn.Module, layer):
        LRP.__init__(self, model)  # the model and its rules, checked as for LRP
        LayerAttribution.__init__(self, model, list(layer) if isinstance(layer, tuple) else layer)

    def attribute(self, inputs, target=None, additional_forward_args=None, return_convergence_delta: bool = False,
                  attribute_to_layer_input: bool = False, verbose: bool = False):
        """LRP relevance at the layer.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            target: the output to explain per example: an int, a tuple index into a multi-dimensional output, a list
                with one of those per example, or None when the model returns one number per example.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            return_convergence_delta: also return the convergence delta per example: the sum of the attributions
                minus ``F(inputs) - F(baselines)``.
            attribute_to_layer_input: attribute to the layer's input instead of its output.
            verbose: print the rule applied to each module.

        Returns:
            The attributions, shaped like the layer's output (or input); a tuple when the layer has several. With
            ``return_convergence_delta=True``, ``(attributions, delta)``.

        Example:
            >>> import torch
            >>> from attrkit import LayerLRP
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> LayerLRP(model, model[0]).attribute(x, target=1).shape
            torch.Size([2, 4])
        """
        xs, _ = plumbing.as_tuple(inputs)
        target, args = plumbing.validate_target(target), plumbing.format_args(additional_forward_args)
        check_rules(self.model)
        per_layer, _ = layer_gradients(self.forward_func, self._layers(), xs, target, args,
                                       attribute_to_layer_input, rules=lrp_rules(verbose).applied(self.model))
        output = plumbing.scalar_outputs(self.forward_func, xs, target, args)
        relevances = [tuple(times_rows(g, output) for g in grads) for grads in per_layer]
        results = [r if len(r) > 1 else r[0] for r in relevances]
        deltas = [self.compute_convergence_delta(r, output) for r in relevances]
        if isinstance(self.layer, list):
            return (results, deltas) if return_convergence_delta else results
        return (results[0], deltas[0]) if return_convergence_delta else results[0]
