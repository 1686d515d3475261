"""Ablation at a layer: :class:`~attrkit.FeatureAblation` and :class:`~attrkit.FeaturePermutation`
applied to a layer's activations.

:class:`attrkit.layer._base.LayerSpace` turns the model into a function of the layer's
activations (the model's own inputs ride along as additional arguments); the primary
method perturbs those activations exactly as it perturbs inputs, in batches, with the
same ``feature_mask`` (here ``layer_mask``) and baselines (here ``layer_baselines``).
"""
from __future__ import annotations

from typing import Callable

from .. import _plumbing as plumbing
from .._batching import format_feature_mask
from ..base import LayerAttribution, PerturbationAttribution
from ..perturbation import FeatureAblation, FeaturePermutation
from ._base import LayerSpace


def _on_layer(attribution: LayerAttribution, inputs, additional_forward_args, attribute_to_layer_input: bool,
              run: Callable[[LayerSpace], tuple]):
    """``run(space)`` applies a primary method to the layer's activations; its result, cut to the layer."""
    xs, _ = plumbing.as_tuple(inputs)
    args = plumbing.format_args(additional_forward_args)
    space = LayerSpace(attribution.forward_func, [attribution.layer], xs, args, attribute_to_layer_input)
    return space.split(run(space), several=False)


def _layer_mask(layer_mask, space: LayerSpace):
    """``layer_mask`` checked against the layer's activations (so that errors name it)."""
    return None if layer_mask is None else format_feature_mask(layer_mask, space.inputs, "layer_mask")


class LayerFeatureAblation(LayerAttribution, PerturbationAttribution):
    r"""Feature ablation of a layer's neurons: :math:`F(x) - F(x \text{ with neuron } j \text{ of the
    layer set to its baseline})`, the rest of the model run as usual.

    By default every neuron is ablated on its own; ``layer_mask`` groups them (same integer
    = ablated together; e.g. a ``(1, C, 1, 1)`` mask of channel numbers ablates whole
    channels), and every neuron of a group gets the group's value.

    Zeiler & Fergus (2014), *Visualizing and Understanding Convolutional Networks*,
    https://arxiv.org/abs/1311.2901

    Example:
        >>> import torch
        >>> from attrkit import LayerFeatureAblation
        >>> from attrkit.testing import SmallCNN
        >>> model = SmallCNN()
        >>> channels = torch.arange(6).reshape(1, 6, 1, 1)  # one feature per channel of conv2
        >>> attr = LayerFeatureAblation(model, model.conv2).attribute(torch.rand(2, 1, 8, 8), target=0,
        ...                                                          layer_mask=channels)
        >>> attr.shape, bool((attr[:, :, 0, 0, None, None] == attr).all())  # one value per channel
        (torch.Size([2, 6, 3, 3]), True)
    """

    def attribute(self, inputs, layer_baselines=None, target=None, additional_forward_args=None,
                  layer_mask=None, attribute_to_layer_input: bool = False,
                  perturbations_per_eval: int | None = None):
        """Attribute by ablating each neuron (group) of the layer in turn.

        Args:
            inputs, target, additional_forward_args: as in :meth:`attrkit.FeatureAblation.attribute`.
            layer_baselines: the replacement values of the layer's neurons: None (zeros), a number, or
                a tensor broadcastable to the layer's output (a tuple of those for a layer returning several).
            layer_mask: integer tensor(s) broadcastable to the layer's output; equal ids are ablated together.
            attribute_to_layer_input: ablate the layer's input instead of its output.
            perturbations_per_eval: perturbations per forward pass; None sizes it from the memory budget.

        Returns:
            The attributions, shaped like the layer's output (or input); a tuple when the layer has several.

        Example:
            >>> import torch
            >>> from attrkit import LayerFeatureAblation
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> LayerFeatureAblation(model, model[0]).attribute(x, target=1).shape
            torch.Size([2, 4])
        """
        def ablate(space: LayerSpace) -> tuple:
            return FeatureAblation(space.function).attribute(
                space.inputs, plumbing.format_baselines(layer_baselines, space.inputs, "layer_baselines"), target,
                space.model_args, _layer_mask(layer_mask, space), perturbations_per_eval)

        return _on_layer(self, inputs, additional_forward_args, attribute_to_layer_input, ablate)


class LayerFeaturePermutation(LayerAttribution, PerturbationAttribution):
    r"""Permutation importance of a layer's neurons: :math:`F(x) - F(x \text{ with neuron } j \text{ of
    the layer shuffled across the batch})`. ``layer_mask`` groups neurons as in
    :class:`LayerFeatureAblation`; the batch needs at least two examples. ``target`` selects
    the output to explain, as in :class:`~attrkit.FeaturePermutation` (Captum 0.9 applies it
    twice and fails for any target, so there only models with one output per example work).

    Fisher, Rudin & Dominici (2019), *All Models are Wrong, but Many are Useful*,
    https://arxiv.org/abs/1801.01489

    Example:
        >>> import torch
        >>> from attrkit import LayerFeaturePermutation
        >>> from attrkit.testing import SmallCNN
        >>> model = SmallCNN()
        >>> LayerFeaturePermutation(model, model.fc).attribute(torch.rand(8, 1, 8, 8), target=1).shape
        torch.Size([8, 3])
    """

    def attribute(self, inputs, target=None, additional_forward_args=None, layer_mask=None,
                  perturbations_per_eval: int | None = None):
        """Attribute by shuffling each neuron (group) of the layer across the batch; arguments as in
        :meth:`LayerFeatureAblation.attribute`.

        Args:
            inputs: the input tensor, or a tuple of tensors, batch first.
            target: the output to explain per example: an int, a tuple index into a multi-dimensional output, a list
                with one of those per example, or None when the model returns one number per example.
            additional_forward_args: extra arguments passed to the model after the inputs; not attributed.
            layer_mask: integer tensor(s) broadcastable to the layer's output; neurons with equal ids are perturbed
                together.
            perturbations_per_eval: perturbed copies per forward pass; None sizes it from the memory budget.

        Returns:
            The attributions, shaped like the layer's output (or input); a tuple when the layer has several.

        Example:
            >>> import torch
            >>> from attrkit import LayerFeaturePermutation
            >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
            >>> x = torch.rand(2, 3)
            >>> _ = torch.manual_seed(0)
            >>> LayerFeaturePermutation(model, model[0]).attribute(torch.rand(5, 3), target=1).shape
            torch.Size([5, 4])
        """
        def permute(space: LayerSpace) -> tuple:
            return FeaturePermutation(space.function).attribute(
                space.inputs, target, space.model_args, _layer_mask(layer_mask, space), perturbations_per_eval)

        return _on_layer(self, inputs, additional_forward_args, False, permute)
