"""What the layer methods share beyond :class:`attrkit.LayerAttribution` (which holds the
layer checks and the completeness delta in layer space): the gradient-based base class,
the result shape, and :class:`LayerSpace`, the model as a function of a layer's activations.
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor

from .._hooks import flat_layer_values, layer_as_variable, layer_values
from ..base import GradientAttribution, LayerAttribution


def layer_result(values: tuple[Tensor, ...]):
    """A layer that produced one tensor gives a tensor back, several give a tuple (as Captum)."""
    return values if len(values) > 1 else values[0]


class LayerGradientAttribution(LayerAttribution, GradientAttribution):
    """Base of the layer methods built from gradients (DeepLift's included): a layer attribution
    with a ``gradient_func``."""


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
            function = layer_as_variable(function, layer, len(values), attribute_to_input)
        self.function = function
        self.inputs = tuple(t for values in self.values for t in values)
        self.model_args = (*inputs, *args)

    def _values(self, layer, inputs: tuple) -> tuple[Tensor, ...]:
        values = layer_values(self.forward_func, layer, inputs, self.args, self.to_input)[0]
        return flat_layer_values(values, self.forward_func, layer, self.to_input, allow_none=False)

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
