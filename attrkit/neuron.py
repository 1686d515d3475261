"""Neuron methods: the primary estimators, aimed at one neuron instead of the model's output.

A neuron method explains a neuron of ``layer`` (its output, or its input with
``attribute_to_neuron_input=True``) in terms of the model's inputs. The neuron is
named by ``neuron_selector``, exactly as in Captum:

* an int — the neuron at that index of a layer with one dimension after the batch;
* a tuple of ints — one index per dimension (batch excluded); slices select several
  neurons, whose activations are summed (a shorter tuple is allowed with slices);
* a callable — takes the layer's output (the tuple of its tensors when there are
  several) and returns one number per example.

:func:`attrkit._hooks.neuron_objective` turns the model into a function returning
that neuron's activation, and the primary method runs on it unchanged:
:class:`NeuronGradient` is :class:`~attrkit.Saliency` (signed),
:class:`NeuronIntegratedGradients` is :class:`~attrkit.IntegratedGradients` and
:class:`NeuronGradientShap` is :class:`~attrkit.GradientShap`,
:class:`NeuronDeepLift` is :class:`~attrkit.DeepLift` (its rules still sit on the
model's nonlinearities), :class:`NeuronDeepLiftShap` is :class:`~attrkit.DeepLiftShap`,
:class:`NeuronGuidedBackprop` and :class:`NeuronDeconvolution` are
:class:`~attrkit.GuidedBackprop` and :class:`~attrkit.Deconvolution`, and
:class:`NeuronFeatureAblation` is :class:`~attrkit.FeatureAblation` of the neuron.
:class:`NeuronConductance` is the one path integral of a different gradient.

The neuron methods built on propagation rules (``NeuronDeepLift``, ``NeuronDeepLiftShap``,
``NeuronGuidedBackprop``, ``NeuronDeconvolution``) live in :mod:`attrkit.neuron_rules`; they are
importable from here too. The base the neuron methods share is in :mod:`attrkit._neuron_base`.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from . import _plumbing as plumbing
from ._hooks import layer_gradients, select_neuron
from ._neuron_base import _AimedAtNeuron, _NeuronMethod
from .base import PerturbationAttribution
from .gradient import GradientShap, IntegratedGradients, Saliency, path_integral, times_change
from .neuron_rules import NeuronDeconvolution, NeuronDeepLift, NeuronDeepLiftShap, NeuronGuidedBackprop  # noqa: F401
from .perturbation import FeatureAblation


class NeuronGradient(_NeuronMethod):
    r"""The gradient of one neuron's activation with respect to the inputs.

    Simonyan, Vedaldi & Zisserman (2013), *Deep Inside Convolutional Networks*,
    https://arxiv.org/abs/1312.6034 (the gradient, here of a hidden neuron)

    Example:
        >>> import torch
        >>> from attrkit import NeuronGradient
        >>> from attrkit.testing import SmallCNN
        >>> model = SmallCNN()
        >>> NeuronGradient(model, model.conv2).attribute(torch.rand(2, 1, 8, 8), neuron_selector=(1, 0, 2)).shape
        torch.Size([2, 1, 8, 8])
    """

    def __init__(self, forward_func: Callable, layer, device_ids=None):
        super().__init__(forward_func, layer, device_ids, multiply_by_inputs=False)

    def attribute(self, inputs, neuron_selector, additional_forward_args=None, attribute_to_neuron_input: bool = False):
        """The gradient of one neuron's activation with respect to ``inputs``.

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
            >>> from attrkit import NeuronGradient
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> NeuronGradient(model, model[0]).attribute(x, neuron_selector=2).shape
            torch.Size([2, 3])
        """
        saliency = self._aimed(Saliency, neuron_selector, attribute_to_neuron_input)
        return saliency.attribute(inputs, abs=False, additional_forward_args=additional_forward_args)


class NeuronIntegratedGradients(_NeuronMethod):
    r"""Integrated Gradients of one neuron's activation:
    :math:`(x - b) \odot \int_0^1 \partial n(b + \alpha(x - b)) / \partial x\, d\alpha`.

    Sundararajan, Taly & Yan (2017), *Axiomatic Attribution for Deep Networks*,
    https://arxiv.org/abs/1703.01365

    Example:
        >>> import torch
        >>> from attrkit import NeuronIntegratedGradients
        >>> from attrkit.testing import ToyModel
        >>> model = ToyModel()
        >>> nig = NeuronIntegratedGradients(model, model.lin1)
        >>> attr = nig.attribute(torch.tensor([[1.0, 2.0, 3.0]]), neuron_selector=2)
        >>> [round(v, 4) for v in attr[0].tolist()]  # lin1 is linear: (x - 0) * its weights (2, 3, 4)
        [2.0, 6.0, 12.0]
    """

    def attribute(self, inputs, neuron_selector, baselines=None, additional_forward_args=None, n_steps: int = 50,
                  method: str = "gausslegendre", internal_batch_size: int | None = None,
                  attribute_to_neuron_input: bool = False):
        """Integrated Gradients of one neuron's activation.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            neuron_selector: the neuron: an int or a tuple of ints indexing the layer's output after the batch
                dimension, a tuple with slices (the selected neurons are summed), or a callable from the layer's
                output to one value per example.
            baselines: the reference the attribution is measured from: None (zeros), a number, a tensor
                broadcastable to the input (one per example or shared), or a tuple of those, one per input.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            n_steps: points on the path from baseline to input.
            method: the quadrature rule: ``"gausslegendre"`` or ``"riemann_left"``, ``"riemann_right"``,
                ``"riemann_middle"``, ``"riemann_trapezoid"``.
            internal_batch_size: path points evaluated per forward pass; None sizes the batches from the memory
                budget. The result does not depend on it.
            attribute_to_neuron_input: select the neuron in the layer's input instead of its output.

        Returns:
            The attributions, shaped like ``inputs`` (a tuple when ``inputs`` is a tuple).

        Example:
            >>> import torch
            >>> from attrkit import NeuronIntegratedGradients
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> NeuronIntegratedGradients(model, model[0]).attribute(x, neuron_selector=2).shape
            torch.Size([2, 3])
        """
        ig = self._aimed(IntegratedGradients, neuron_selector, attribute_to_neuron_input,
                         multiply_by_inputs=self.multiplies_by_inputs)
        return ig.attribute(inputs, baselines, additional_forward_args=additional_forward_args, n_steps=n_steps,
                            method=method, internal_batch_size=internal_batch_size)


class NeuronGradientShap(_NeuronMethod):
    r"""GradientSHAP of one neuron's activation: expected gradients of the neuron at random
    points between (noisy) inputs and baselines drawn from a reference distribution,
    times ``inputs - baselines``.

    Lundberg & Lee (2017), *A Unified Approach to Interpreting Model Predictions*,
    https://arxiv.org/abs/1705.07874

    Example:
        >>> import torch
        >>> from attrkit import NeuronGradientShap
        >>> from attrkit.testing import SmallCNN
        >>> model = SmallCNN()
        >>> gs = NeuronGradientShap(model, model.fc)
        >>> gs.attribute(torch.rand(2, 1, 8, 8), neuron_selector=1, baselines=torch.zeros(3, 1, 8, 8)).shape
        torch.Size([2, 1, 8, 8])
    """

    def attribute(self, inputs, neuron_selector, baselines, n_samples: int = 5, stdevs=0.0,
                  additional_forward_args=None, attribute_to_neuron_input: bool = False):
        """GradientShap of one neuron's activation.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            neuron_selector: the neuron: an int or a tuple of ints indexing the layer's output after the batch
                dimension, a tuple with slices (the selected neurons are summed), or a callable from the layer's
                output to one value per example.
            baselines: the reference the attribution is measured from: None (zeros), a number, a tensor
                broadcastable to the input (one per example or shared), or a tuple of those, one per input.
            n_samples: random samples drawn per example.
            stdevs: standard deviation of the Gaussian noise added to each sample: a float, or one per input.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            attribute_to_neuron_input: select the neuron in the layer's input instead of its output.

        Returns:
            The attributions, shaped like ``inputs`` (a tuple when ``inputs`` is a tuple).

        Example:
            >>> import torch
            >>> from attrkit import NeuronGradientShap
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> _ = torch.manual_seed(0)
            >>> NeuronGradientShap(model, model[0]).attribute(x, neuron_selector=1, baselines=torch.zeros(3, 3)).shape
            torch.Size([2, 3])
        """
        gs = self._aimed(GradientShap, neuron_selector, attribute_to_neuron_input,
                         multiply_by_inputs=self.multiplies_by_inputs)
        return gs.attribute(inputs, baselines, n_samples=n_samples, stdevs=stdevs,
                            additional_forward_args=additional_forward_args)


class NeuronFeatureAblation(_AimedAtNeuron, PerturbationAttribution):
    r"""Feature ablation of one neuron's activation: how much the neuron changes when an input
    feature (or a group of them, ``feature_mask``) is replaced by its baseline,
    :math:`n(x) - n(x \text{ with feature } i \text{ ablated})`.

    Zeiler & Fergus (2014), *Visualizing and Understanding Convolutional Networks*,
    https://arxiv.org/abs/1311.2901

    Example:
        >>> import torch
        >>> from attrkit import NeuronFeatureAblation
        >>> from attrkit.testing import ToyModel
        >>> model = ToyModel()
        >>> attr = NeuronFeatureAblation(model, model.lin1).attribute(torch.tensor([[1.0, 2.0, 3.0]]), 2)
        >>> attr.tolist()  # lin1 is linear: each input times its weight (2, 3, 4)
        [[2.0, 6.0, 12.0]]
    """

    def __init__(self, forward_func: Callable, layer: torch.nn.Module, device_ids=None):
        super().__init__(forward_func, layer, device_ids)

    def attribute(self, inputs, neuron_selector, baselines=None, additional_forward_args=None, feature_mask=None,
                  attribute_to_neuron_input: bool = False, perturbations_per_eval: int | None = None):
        """Arguments as in :meth:`attrkit.FeatureAblation.attribute`, with the neuron (``neuron_selector``)
        in place of ``target``; ``perturbations_per_eval=None`` sizes the batches from the memory budget.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            baselines: the reference the attribution is measured from: None (zeros), a number, a tensor
                broadcastable to the input (one per example or shared), or a tuple of those, one per input.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            feature_mask: integer tensor(s) broadcastable to each input; features with equal ids are perturbed
                together.
            attribute_to_neuron_input: select the neuron in the layer's input instead of its output.

        Returns:
            The attributions, shaped like ``inputs`` (a tuple when ``inputs`` is a tuple).

        Example:
            >>> import torch
            >>> from attrkit import NeuronFeatureAblation
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> NeuronFeatureAblation(model, model[0]).attribute(x, neuron_selector=3).shape
            torch.Size([2, 3])
        """
        ablation = self._aimed(FeatureAblation, neuron_selector, attribute_to_neuron_input)
        return ablation.attribute(inputs, baselines, additional_forward_args=additional_forward_args,
                                  feature_mask=feature_mask, perturbations_per_eval=perturbations_per_eval)


class NeuronConductance(_NeuronMethod):
    r"""Neuron conductance: how much of the target output's change flows through one
    neuron, attributed to the inputs,
    :math:`(x_i - b_i) \int_0^1 \frac{\partial F}{\partial n} \frac{\partial n}{\partial x_i}\, d\alpha`
    along the straight path from the baseline to the input (``riemann_trapezoid`` by
    default, as Captum). Summed over the inputs it is the neuron's layer conductance.

    A deliberate departure from Captum: attrkit's trapezoid weights sum to 1, Captum's
    to (n - 1)/n, so with ``method="riemann_trapezoid"`` (the default) the result is
    Captum's times n / (n - 1) for ``n_steps`` = n; the other methods agree.

    Dhamdhere, Sundararajan & Yan (2018), *How Important Is a Neuron?*,
    https://arxiv.org/abs/1805.12233

    Example:
        >>> import torch
        >>> from attrkit import NeuronConductance
        >>> from attrkit.testing import SmallCNN
        >>> model = SmallCNN()
        >>> nc = NeuronConductance(model, model.conv2)
        >>> nc.attribute(torch.rand(2, 1, 8, 8), neuron_selector=(0, 1, 1), target=2, n_steps=20).shape
        torch.Size([2, 1, 8, 8])
    """

    def attribute(self, inputs, neuron_selector, baselines=None, target=None, additional_forward_args=None,
                  n_steps: int = 50, method: str = "riemann_trapezoid", internal_batch_size: int | None = None,
                  attribute_to_neuron_input: bool = False, grad_kwargs: dict | None = None):
        """Conductance through one neuron: the target's path integral restricted to the flow through that neuron.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            neuron_selector: the neuron: an int or a tuple of ints indexing the layer's output after the batch
                dimension, a tuple with slices (the selected neurons are summed), or a callable from the layer's
                output to one value per example.
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
            attribute_to_neuron_input: select the neuron in the layer's input instead of its output.
            grad_kwargs: keyword arguments passed to ``torch.autograd.grad``.

        Returns:
            The attributions, shaped like ``inputs`` (a tuple when ``inputs`` is a tuple).

        Example:
            >>> import torch
            >>> from attrkit import NeuronConductance
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> NeuronConductance(model, model[0]).attribute(x, neuron_selector=1, target=0, n_steps=16).shape
            torch.Size([2, 3])
        """
        xs, is_tuple = plumbing.as_tuple(inputs)
        bs = plumbing.format_baselines(baselines, xs)
        target, args = plumbing.validate_target(target), plumbing.format_args(additional_forward_args)

        def grad_fn(points, t, a):
            return _gradients_through_neuron(self.forward_func, self.layer, neuron_selector,
                                             attribute_to_neuron_input, points, t, a, grad_kwargs)

        grads = path_integral(grad_fn, xs, bs, method, n_steps, target, args, internal_batch_size)
        attrs = times_change(grads, xs, bs) if self.multiplies_by_inputs else grads
        return plumbing.restore(attrs, is_tuple)


def _gradients_through_neuron(forward_func, layer, neuron_selector, attribute_to_input, inputs, target, args,
                              grad_kwargs=None):
    r""":math:`\partial F / \partial n \cdot \partial n / \partial x` at ``inputs``, in one forward pass.

    As in Captum, :math:`\partial F / \partial n` is ``neuron_selector`` applied to the
    gradient of the output with respect to the layer.
    """
    leaves = tuple(x.detach().requires_grad_() for x in inputs)
    n = plumbing.batch_size_of(leaves)
    through_layer, values = layer_gradients(forward_func, layer, leaves, target, args, attribute_to_input,
                                            retain_graph=True, grad_kwargs=grad_kwargs)
    with torch.enable_grad():
        neuron = plumbing.per_example(select_neuron(_one_or_all(values), neuron_selector), n, "neuron_selector")
        neuron_per_input = torch.autograd.grad(neuron.sum(), leaves, **{"allow_unused": True, **(grad_kwargs or {})})
    output_per_neuron = select_neuron(_one_or_all(through_layer), neuron_selector).reshape(n)
    return tuple((torch.zeros_like(x) if g is None else g) * output_per_neuron.reshape(-1, *([1] * (x.dim() - 1)))
                 for x, g in zip(leaves, neuron_per_input))


def _one_or_all(values: tuple[Tensor, ...]):
    return values if len(values) > 1 else values[0]
