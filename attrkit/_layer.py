"""What every layer method shares: the layer checks, the completeness delta in layer
space, and :class:`LayerSpace`, the model as a function of a layer's activations.

The public layer methods live in :mod:`attrkit.layer` (gradient-based),
:mod:`attrkit.layer_deeplift` and :mod:`attrkit.layer_perturbation`.
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor

from . import _hooks as H
from . import _plumbing as P
from .base import GradientAttribution, LayerAttribution


def layer_result(values: tuple[Tensor, ...]):
    """A layer that produced one tensor gives a tensor back, several give a tuple (as Captum)."""
    return values if len(values) > 1 else values[0]


def flatten(attributions) -> tuple[Tensor, ...]:
    """Tensors out of a tensor, a tuple, or a list (one entry per layer) of those."""
    if isinstance(attributions, Tensor):
        return (attributions,)
    return tuple(t for a in attributions for t in flatten(a))


class LayerBase(LayerAttribution):
    """Layer checks, one layer or a list of them, and a completeness delta in layer space."""

    _accepts_layer_list = False

    def __init__(self, forward_func: Callable, layer, device_ids=None):
        super().__init__(forward_func, layer, device_ids)
        if isinstance(layer, list) and not self._accepts_layer_list:
            raise TypeError(f"`layer` must be one torch.nn.Module for {type(self).__name__}, got a list.")

    def _layers(self) -> list:
        return self.layer if isinstance(self.layer, list) else [self.layer]

    def _for_each_layer(self, attribute_one: Callable):
        """``attribute_one(layer)`` for the layer, or a list over the layers when given several."""
        results = [attribute_one(layer) for layer in self._layers()]
        return results if isinstance(self.layer, list) else results[0]

    def compute_convergence_delta(self, attributions, start_point, end_point, target=None,
                                  additional_forward_args=None) -> Tensor:
        """Completeness error per example: attributions summed over the layer minus ``f(end) - f(start)``."""
        layer_attrs = flatten(attributions)
        end, _ = P.as_tuple(end_point, "end_point")
        start = P.format_baselines(start_point, end, "start_point")
        n = P.batch_size_of(end)
        if any(a.shape[0] != n for a in layer_attrs):
            raise ValueError(f"`attributions` must have one row per example ({n}); got batch sizes "
                             f"{[a.shape[0] for a in layer_attrs]}.")
        target, args = P.validate_target(target), P.format_args(additional_forward_args)
        gain = P.scalar_outputs(self.forward_func, end, target, args) - P.scalar_outputs(
            self.forward_func, start, target, args)
        return P.sum_per_example(layer_attrs).to(gain.dtype) - gain


class LayerMethod(LayerBase, GradientAttribution):
    """Shared by the gradient-based layer methods (DeepLift's included)."""


class LayerSpace:
    """The model as a function of the activations of one or more layers.

    ``function(*activations, *model_inputs, *model_args)`` runs the model with the
    layers' outputs (or inputs) replaced; ``inputs`` holds the activations at the
    model inputs, ``model_args`` what goes into ``additional_forward_args``. Any
    primary method applied to (``function``, ``inputs``) attributes to the layers.
    """

    def __init__(self, forward_func: Callable, layers: list, inputs: tuple, args: tuple, attribute_to_input: bool):
        self.forward_func, self.layers, self.args, self.to_input = forward_func, layers, args, attribute_to_input
        self.values = [self._values(layer, inputs) for layer in layers]
        function = forward_func
        for layer, values in zip(reversed(layers), reversed(self.values)):
            function = H.layer_as_variable(function, layer, len(values), attribute_to_input)
        self.function = function
        self.inputs = tuple(t for values in self.values for t in values)
        self.model_args = (*inputs, *args)

    def _values(self, layer, inputs: tuple) -> tuple[Tensor, ...]:
        return H.layer_values(self.forward_func, layer, inputs, self.args, self.to_input)[0]

    def values_at(self, inputs: tuple) -> tuple[Tensor, ...]:
        """The layers' activations (flattened like ``self.inputs``) when the model runs on other inputs."""
        return tuple(t for layer in self.layers for t in self._values(layer, inputs))

    def split(self, flat: tuple[Tensor, ...], several: bool):
        """Cut a flat tuple of layer-shaped results back into one result per layer."""
        out, start = [], 0
        for values in self.values:
            out.append(layer_result(tuple(flat[start:start + len(values)])))
            start += len(values)
        return out if several else out[0]
