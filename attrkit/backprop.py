"""Guided backpropagation and deconvolution: the gradient with the ReLUs' backward pass overridden.

Both are one :class:`~attrkit._rules.RuleSet` each over the backward-rule mechanism of
:mod:`attrkit._rules` (shared with DeepLift and LRP): a rule on every ``nn.ReLU`` /
``nn.ReLU6`` module, applied at every call (reused and in-place modules included).
ReLUs called as functions inside ``forward()`` keep their ordinary gradient, as in
Captum, with a warning that names them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _plumbing as plumbing
from ._rules import BackwardRule, RuleSet, rules_applied  # noqa: F401 - rules_applied: the historical import path
from .base import GradientAttribution, require_module

_RELU_FUNCTIONS = {F.relu, F.relu_, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_, F.relu6}

# --------------------------------------------------------------------------- guided backprop / deconvolution
class _GuidedRule(BackwardRule):
    """Negative gradients stop here; the rest goes through the ReLU's own derivative."""

    def backward(self, state, grad):
        return None, grad.clamp(min=0)


class _DeconvRule(BackwardRule):
    """Negative gradients stop here; the rest goes straight to the input (the ReLU's mask is ignored)."""

    def backward(self, state, grad):
        return grad.clamp(min=0), None


RELU_MODULES = (nn.ReLU, nn.ReLU6)


def _relu_rules(rule: BackwardRule, method: str) -> RuleSet:
    return RuleSet(lambda m: rule if isinstance(m, RELU_MODULES) else None, method, _RELU_FUNCTIONS,
                   "Use nn.ReLU modules in the model so their gradients can be overridden.")


class _ReluOverride(GradientAttribution):
    """The gradient of the target with the backward pass of every ReLU module overridden (``_rules``)."""

    _rules: RuleSet

    def __init__(self, model: nn.Module):
        super().__init__(require_module(model, type(self).__name__, "its ReLU modules are hooked"))
        self.model = model

    def attribute(self, inputs, target=None, additional_forward_args=None):
        """The gradient of the target output with the ReLUs' backward pass overridden (see the class).

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            target: the output to explain per example: an int, a tuple index into a multi-dimensional output, a list
                with one of those per example, or None when the model returns one number per example.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.

        Returns:
            The attributions, shaped like ``inputs`` (a tuple when ``inputs`` is a tuple).

        Example:
            >>> import torch
            >>> from attrkit import GuidedBackprop, Deconvolution
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> GuidedBackprop(model).attribute(x, target=0).shape == Deconvolution(model).attribute(x, target=0).shape
            True
        """
        xs, is_tuple = plumbing.as_tuple(inputs)
        target, args = plumbing.validate_target(target), plumbing.format_args(additional_forward_args)
        with self._rules.applied(self.model):
            grads = self.gradient_func(self.forward_func, xs, target, args)
        return plumbing.restore(grads, is_tuple)


class GuidedBackprop(_ReluOverride):
    r"""Guided backpropagation: the gradient, but only positive gradients pass back through ReLUs.

    At every ReLU call the backward pass keeps the usual mask (the ReLU's input was
    positive) *and* drops negative incoming gradients. ``nn.ReLU`` and ``nn.ReLU6``
    modules are overridden, also when a module is called several times or works in
    place; ReLUs called as functions keep their ordinary gradient (with a warning).

    Springenberg et al. (2015), *Striving for Simplicity: The All Convolutional Net*,
    https://arxiv.org/abs/1412.6806

    Example:
        >>> import torch
        >>> from attrkit import GuidedBackprop
        >>> from attrkit.testing import SmallCNN
        >>> attr = GuidedBackprop(SmallCNN()).attribute(torch.rand(2, 1, 8, 8), target=0)
        >>> attr.shape
        torch.Size([2, 1, 8, 8])
    """

    _rules = _relu_rules(_GuidedRule(), "GuidedBackprop")


class Deconvolution(_ReluOverride):
    r"""Deconvolution (deconvnet): the backward pass through each ReLU is the ReLU of the
    incoming gradient, whatever the ReLU's input was.

    Zeiler & Fergus (2014), *Visualizing and Understanding Convolutional Networks*,
    https://arxiv.org/abs/1311.2901

    Example:
        >>> import torch
        >>> from attrkit import Deconvolution
        >>> from attrkit.testing import SmallCNN
        >>> attr = Deconvolution(SmallCNN()).attribute(torch.rand(2, 1, 8, 8), target=1)
        >>> attr.shape
        torch.Size([2, 1, 8, 8])
    """

    _rules = _relu_rules(_DeconvRule(), "Deconvolution")
