"""What the layer methods share beyond :class:`attrkit.LayerAttribution` (which holds the
layer checks and the completeness delta in layer space): the gradient-based base class,
the result shape, and :class:`LayerSpace`, the model as a function of a layer's activations.
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor

from .._hooks import flat_layer_values, layer_as_variable, layer_name, layer_values
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
        values = flat_layer_values(values, self.forward_func, layer, self.to_input, allow_none=False)
        if self.to_input:
            _check_layer_input(values, self.forward_func, layer)
        return values

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


def _check_layer_input(values: tuple[Tensor, ...], forward_func: Callable, layer) -> None:
    """With ``attribute_to_layer_input=True`` the layer's positional inputs become the variables: none (the
    input came by keyword, which a forward pre-hook does not see) or integers (an embedding's token ids)
    cannot be."""
    name = layer_name(forward_func, layer)
    if not values:
        raise ValueError(f"`attribute_to_layer_input=True`: layer `{name}` received its input by keyword (nothing "
                         "positionally), which a layer hook cannot see: call the layer positionally in forward(), "
                         "or attribute to its output.")
    if not all(v.is_floating_point() or v.is_complex() for v in values):
        raise TypeError(f"`attribute_to_layer_input=True`: the input of layer `{name}` ({type(layer).__name__}) holds "
                        "integers (token ids), which have no gradient: attribute to the layer's output instead "
                        "(attribute_to_layer_input=False gives the embeddings).")
