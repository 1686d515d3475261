"""Neuron methods built on propagation rules, aimed at one neuron instead of the model's output.

The neuron is named by ``neuron_selector`` as in :mod:`attrkit.neuron`, and the primary method runs unchanged
on the neuron's activation (its rules still sit on the model's nonlinearities):

* :class:`NeuronDeepLift` is :class:`~attrkit.DeepLift`, :class:`NeuronDeepLiftShap` is
  :class:`~attrkit.DeepLiftShap`;
* :class:`NeuronGuidedBackprop` and :class:`NeuronDeconvolution` are :class:`~attrkit.GuidedBackprop` and
  :class:`~attrkit.Deconvolution`.

Every class is also importable from :mod:`attrkit.neuron` and ``attrkit``.
"""
from __future__ import annotations

from typing import Callable

import torch

from ._neuron_base import _NeuronMethod
from .backprop import Deconvolution, GuidedBackprop
from .base import require_module
from .deeplift import DeepLift, DeepLiftShap

__all__ = ["NeuronDeepLift", "NeuronDeepLiftShap", "NeuronGuidedBackprop", "NeuronDeconvolution"]


class NeuronDeepLift(_NeuronMethod):
    r"""DeepLIFT (Rescale rule) of one neuron's activation: multipliers of the neuron with
    respect to the inputs, times ``inputs - baselines``. The attributions add up to the
    neuron's change :math:`n(x) - n(b)` under the conditions :class:`~attrkit.DeepLift`
    states for the model's output.

    Agrees with Captum except where two nonlinearities with DeepLift rules follow each
    other directly on the path to the neuron (a ReLU feeding a max pooling layer, as in
    :class:`~attrkit.testing.SmallCNN`): Captum's rules interfere there and its
    attributions no longer add up to the neuron's change; attrkit's still do (the same
    difference as for :class:`~attrkit.DeepLift`). ``eps`` and ``rules`` as in :class:`~attrkit.DeepLift`.

    Shrikumar, Greenside & Kundaje (2017), *Learning Important Features Through
    Propagating Activation Differences*, https://arxiv.org/abs/1704.02685

    Example:
        >>> import torch
        >>> from attrkit import LayerActivation, NeuronDeepLift
        >>> from attrkit.testing import SmallCNN
        >>> model = SmallCNN().eval()
        >>> x = torch.rand(2, 1, 8, 8)
        >>> attr = NeuronDeepLift(model, model.conv2).attribute(x, neuron_selector=(3, 1, 1))
        >>> conv2 = LayerActivation(model, model.conv2)
        >>> change = conv2.attribute(x)[:, 3, 1, 1] - conv2.attribute(torch.zeros_like(x))[:, 3, 1, 1]
        >>> torch.allclose(attr.sum((1, 2, 3)), change, atol=1e-5)  # baseline: zeros
        True
    """

    def __init__(self, model: torch.nn.Module, layer: torch.nn.Module, multiply_by_inputs: bool = True,
                 eps: float = 1e-10, rules: dict | None = None):
        super().__init__(require_module(model, type(self).__name__, "its modules are hooked"), layer,
                         multiply_by_inputs=multiply_by_inputs)
        self.eps, self.rules = eps, rules

    def attribute(self, inputs, neuron_selector, baselines=None, additional_forward_args=None,
                  attribute_to_neuron_input: bool = False, custom_attribution_func: Callable | None = None):
        """DeepLift of one neuron's activation.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            neuron_selector: the neuron: an int or a tuple of ints indexing the layer's output after the batch
                dimension, a tuple with slices (the selected neurons are summed), or a callable from the layer's
                output to one value per example.
            baselines: the reference the attribution is measured from: None (zeros), a number, a tensor
                broadcastable to the input (one per example or shared), or a tuple of those, one per input.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            attribute_to_neuron_input: select the neuron in the layer's input instead of its output.
            custom_attribution_func: replaces the final ``multipliers * (inputs - baselines)``: it is called with
                the multipliers (then also the inputs and the baselines), tuples over the inputs, and returns a
                tuple of attributions.

        Returns:
            The attributions, shaped like ``inputs`` (a tuple when ``inputs`` is a tuple).

        Example:
            >>> import torch
            >>> from attrkit import NeuronDeepLift
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> NeuronDeepLift(model, model[2]).attribute(x, neuron_selector=0).shape
            torch.Size([2, 3])
        """
        dl = self._aimed(DeepLift, neuron_selector, attribute_to_neuron_input,
                         multiply_by_inputs=self.multiplies_by_inputs, eps=self.eps, rules=self.rules)
        return dl.attribute(inputs, baselines, additional_forward_args=additional_forward_args,
                            custom_attribution_func=custom_attribution_func)


class NeuronDeepLiftShap(_NeuronMethod):
    r""":class:`NeuronDeepLift` averaged over a distribution of baselines (every input paired
    with every baseline), an approximation of the SHAP values of one neuron.

    Lundberg & Lee (2017), *A Unified Approach to Interpreting Model Predictions*,
    https://arxiv.org/abs/1705.07874

    Example:
        >>> import torch
        >>> from attrkit import NeuronDeepLiftShap
        >>> from attrkit.testing import SmallCNN
        >>> model = SmallCNN().eval()
        >>> dls = NeuronDeepLiftShap(model, model.fc)
        >>> dls.attribute(torch.rand(2, 1, 8, 8), neuron_selector=1, baselines=torch.rand(4, 1, 8, 8)).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(self, model: torch.nn.Module, layer: torch.nn.Module, multiply_by_inputs: bool = True,
                 rules: dict | None = None):
        super().__init__(require_module(model, type(self).__name__, "its modules are hooked"), layer,
                         multiply_by_inputs=multiply_by_inputs)
        self.rules = rules

    def attribute(self, inputs, neuron_selector, baselines, additional_forward_args=None,
                  attribute_to_neuron_input: bool = False, custom_attribution_func: Callable | None = None):
        """DeepLiftShap of one neuron's activation: DeepLift against each reference in ``baselines``, averaged.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            neuron_selector: the neuron: an int or a tuple of ints indexing the layer's output after the batch
                dimension, a tuple with slices (the selected neurons are summed), or a callable from the layer's
                output to one value per example.
            baselines: the reference the attribution is measured from: None (zeros), a number, a tensor
                broadcastable to the input (one per example or shared), or a tuple of those, one per input.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            attribute_to_neuron_input: select the neuron in the layer's input instead of its output.
            custom_attribution_func: replaces the final ``multipliers * (inputs - baselines)``: it is called with
                the multipliers (then also the inputs and the baselines), tuples over the inputs, and returns a
                tuple of attributions.

        Returns:
            The attributions, shaped like ``inputs`` (a tuple when ``inputs`` is a tuple).

        Example:
            >>> import torch
            >>> from attrkit import NeuronDeepLiftShap
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> NeuronDeepLiftShap(model, model[2]).attribute(x, neuron_selector=0, baselines=torch.rand(4, 3)).shape
            torch.Size([2, 3])
        """
        dls = self._aimed(DeepLiftShap, neuron_selector, attribute_to_neuron_input,
                          multiply_by_inputs=self.multiplies_by_inputs, rules=self.rules)
        return dls.attribute(inputs, baselines, additional_forward_args=additional_forward_args,
                             custom_attribution_func=custom_attribution_func)


class _NeuronReluOverride(_NeuronMethod):
    """A neuron method from a primary method that overrides the ReLUs' backward pass (``_method``)."""

    _method: type

    def __init__(self, model: torch.nn.Module, layer: torch.nn.Module, device_ids=None):
        super().__init__(require_module(model, type(self).__name__, "its modules are hooked"), layer, device_ids,
                         multiply_by_inputs=False)

    def attribute(self, inputs, neuron_selector, additional_forward_args=None, attribute_to_neuron_input: bool = False):
        """The neuron's gradient with the ReLUs' backward pass overridden (see the class).

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            neuron_selector: the neuron: an int or a tuple of ints indexing the layer's output after the batch
                dimension, a tuple with slices (the selected neurons are summed), or a callable from the layer's
                output to one value per example.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            attribute_to_neuron_input: select the neuron in the layer's input instead of its output.

        Returns:
            The attributions, shaped like ``inputs`` (a tuple when ``inputs`` is a tuple).

        Example:
            >>> import torch
            >>> from attrkit import NeuronGuidedBackprop
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> NeuronGuidedBackprop(model, model[2]).attribute(x, neuron_selector=1).shape
            torch.Size([2, 3])
        """
        method = self._aimed(self._method, neuron_selector, attribute_to_neuron_input)
        return method.attribute(inputs, additional_forward_args=additional_forward_args)


class NeuronGuidedBackprop(_NeuronReluOverride):
    r"""Guided backpropagation of one neuron's activation: its gradient with only positive
    gradients passed back through the ReLUs.

    Springenberg et al. (2015), *Striving for Simplicity: The All Convolutional Net*,
    https://arxiv.org/abs/1412.6806

    Example:
        >>> import torch
        >>> from attrkit import NeuronGuidedBackprop
        >>> from attrkit.testing import SmallCNN
        >>> model = SmallCNN()
        >>> NeuronGuidedBackprop(model, model.conv2).attribute(torch.rand(2, 1, 8, 8), (1, 0, 2)).shape
        torch.Size([2, 1, 8, 8])
    """

    _method = GuidedBackprop


class NeuronDeconvolution(_NeuronReluOverride):
    r"""Deconvolution of one neuron's activation: its gradient with the ReLU of the incoming
    gradient passed back through every ReLU.

    Zeiler & Fergus (2014), *Visualizing and Understanding Convolutional Networks*,
    https://arxiv.org/abs/1311.2901

    Example:
        >>> import torch
        >>> from attrkit import NeuronDeconvolution
        >>> from attrkit.testing import SmallCNN
        >>> model = SmallCNN()
        >>> NeuronDeconvolution(model, model.fc).attribute(torch.rand(2, 1, 8, 8), neuron_selector=0).shape
        torch.Size([2, 1, 8, 8])
    """

    _method = Deconvolution
